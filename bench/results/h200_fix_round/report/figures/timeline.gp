# timeline (thermoe analyze). Data: timeline.dat. Restyle freely, then render with
#   gnuplot -e "fmt='png'" timeline.gp     (fmt: png, pdf or svg)
if (!exists("fmt")) fmt = 'png'
if (fmt eq 'pdf') {
  fs = 7
  set terminal pdfcairo size 7.00in,3.60in font 'Sans,7' linewidth 1.5
} else { if (fmt eq 'svg') {
  fs = 13
  set terminal svg size 1400,720 font 'Sans,13' linewidth 1.5 background '#ffffff'
} else {
  fs = 19
  set terminal pngcairo size 2100,1080 font 'Sans,19' linewidth 2.5
} }
set output 'timeline.'.fmt
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
set title 'Whole run: power and temperature over time'
xl = 'time since run start (s)'
yl = ''
set xlabel xl
set ylabel yl
set key below horizontal
set grid lc rgb '#dddddd'
set border 3
set tics nomirror
set xrange [11.215148:126.792493]
unset title
set lmargin at screen 0.08
set rmargin at screen 0.84
set tics font f7
set xlabel font f75
set ylabel font f75
set multiplot layout 2,1 title 'Whole run: power and temperature over time' font f85
set arrow 1 from first 12.3482592, graph 0 to first 12.3482592, graph 1 nohead dt 3 lc rgb '#999999'
set label 1 'standard' at first 12.3482592, graph 0.95 left offset 0.3,0 font f55 tc rgb '#555555'
set yrange [382.895442:589.939469]
set ylabel 'average power (W)'
set key outside right top vertical font f6
unset xlabel
plot \
  'timeline.dat' index 0 using 1:2 with lines lw 1.2 lc rgb '#000000' title 'baseline', \
  'timeline.dat' index 1 using 1:2 with lines lw 1.2 lc rgb '#E69F00' title 'static_optimal', \
  'timeline.dat' index 2 using 1:2 with lines lw 1.2 lc rgb '#0072B2' title 'kernel_aware_ttha', \
  'timeline.dat' index 3 using 1:2 with lines lw 1.2 lc rgb '#56B4E9' title 'topk_minus_one'
set yrange [44.44:52.56]
set ylabel 'temperature (C): GPU solid, HBM dashed'
unset key
set xlabel 'time since run start (s)'
unset label
plot \
  'timeline.dat' index 0 using 1:3 with lines lw 1.2 lc rgb '#000000' notitle, \
  'timeline.dat' index 0 using 1:4 with lines lw 1 dt 2 lc rgb '#000000' notitle, \
  'timeline.dat' index 1 using 1:3 with lines lw 1.2 lc rgb '#E69F00' notitle, \
  'timeline.dat' index 1 using 1:4 with lines lw 1 dt 2 lc rgb '#E69F00' notitle, \
  'timeline.dat' index 2 using 1:3 with lines lw 1.2 lc rgb '#0072B2' notitle, \
  'timeline.dat' index 2 using 1:4 with lines lw 1 dt 2 lc rgb '#0072B2' notitle, \
  'timeline.dat' index 3 using 1:3 with lines lw 1.2 lc rgb '#56B4E9' notitle, \
  'timeline.dat' index 3 using 1:4 with lines lw 1 dt 2 lc rgb '#56B4E9' notitle
unset multiplot
