# forest (thermoe analyze). Data: forest.dat. Restyle freely, then render with
#   gnuplot -e "fmt='png'" forest.gp     (fmt: png, pdf or svg)
if (!exists("fmt")) fmt = 'png'
if (fmt eq 'pdf') {
  fs = 7
  set terminal pdfcairo size 7.00in,2.60in font 'Sans,7' linewidth 1.5
} else { if (fmt eq 'svg') {
  fs = 13
  set terminal svg size 1400,520 font 'Sans,13' linewidth 1.5 background '#ffffff'
} else {
  fs = 19
  set terminal pngcairo size 2100,780 font 'Sans,19' linewidth 2.5
} }
set output 'forest.'.fmt
set termoption noenhanced
# fN: the font at 0.N times the base size fs, for small multiples and keys
f55 = sprintf(',%g', fs * 0.55)
f6 = sprintf(',%g', fs * 0.6)
f65 = sprintf(',%g', fs * 0.65)
f7 = sprintf(',%g', fs * 0.7)
f75 = sprintf(',%g', fs * 0.75)
f8 = sprintf(',%g', fs * 0.8)
f85 = sprintf(',%g', fs * 0.85)
f9 = sprintf(',%g', fs * 0.9)
set title 'Change vs baseline, 95% CI over repeats (unit = repeat)'
xl = ''
yl = ''
set xlabel xl
set ylabel yl
set key below horizontal
set grid lc rgb '#dddddd'
set border 3
set tics nomirror
set datafile missing 'NaN'
set yrange [-0.6:2.6]
set grid noytics
set border 1
unset ylabel
unset title
unset key
set tics font f75
set multiplot layout 1,5 margins 0.24,0.985,0.1346,0.7885 spacing 0.012,0 title 'Change vs baseline, 95% CI over repeats (unit = repeat)' font f85
set title 'energy per token (mJ)' font f8
set ytics ('static_optimal' 2, 'kernel_aware_ttha' 1, 'topk_minus_one' 0) nomirror
set xrange [-36.9661497:2.73823331]
set xtics font f65
set arrow 1 from first 0, graph 0 to first 0, graph 1 nohead dt 2 lc rgb '#777777'
plot 'forest.dat' index 0 using 2:1:6 with points pt 7 ps 1.1 lc rgb variable notitle, \
  '' index 0 using 2:1:3:4:6 with xerrorbars pt 7 ps 1.1 lw 1.5 lc rgb variable notitle
set title 'perplexity (%)' font f8
set ytics 0,1 format '' scale 0 nomirror
set xrange [-2.87431749:38.8032861]
set xtics font f65
set arrow 1 from first 0, graph 0 to first 0, graph 1 nohead dt 2 lc rgb '#777777'
plot 'forest.dat' index 1 using 2:1:6 with points pt 7 ps 1.1 lc rgb variable notitle, \
  '' index 1 using 2:1:3:4:6 with xerrorbars pt 7 ps 1.1 lw 1.5 lc rgb variable notitle
set title 'p99 latency (ms)' font f8
set ytics 0,1 format '' scale 0 nomirror
set xrange [-52.0585694:89.9194574]
set xtics font f65
set arrow 1 from first 0, graph 0 to first 0, graph 1 nohead dt 2 lc rgb '#777777'
plot 'forest.dat' index 2 using 2:1:6 with points pt 7 ps 1.1 lc rgb variable notitle, \
  '' index 2 using 2:1:3:4:6 with xerrorbars pt 7 ps 1.1 lw 1.5 lc rgb variable notitle
set title 'peak GPU temperature (C)' font f8
set ytics 0,1 format '' scale 0 nomirror
set xrange [-2.99702572:0.330359056]
set xtics font f65
set arrow 1 from first 0, graph 0 to first 0, graph 1 nohead dt 2 lc rgb '#777777'
plot 'forest.dat' index 3 using 2:1:6 with points pt 7 ps 1.1 lc rgb variable notitle, \
  '' index 3 using 2:1:3:4:6 with xerrorbars pt 7 ps 1.1 lw 1.5 lc rgb variable notitle
set title 'peak HBM temperature (C)' font f8
set ytics 0,1 format '' scale 0 nomirror
set xrange [-2.33035906:0.997025722]
set xtics font f65
set arrow 1 from first 0, graph 0 to first 0, graph 1 nohead dt 2 lc rgb '#777777'
plot 'forest.dat' index 4 using 2:1:6 with points pt 7 ps 1.1 lc rgb variable notitle, \
  '' index 4 using 2:1:3:4:6 with xerrorbars pt 7 ps 1.1 lw 1.5 lc rgb variable notitle
unset multiplot
