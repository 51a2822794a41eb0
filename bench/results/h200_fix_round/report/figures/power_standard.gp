# power_standard (thermoe analyze). Data: power_standard.dat. Restyle freely, then render with
#   gnuplot -e "fmt='png'" power_standard.gp     (fmt: png, pdf or svg)
if (!exists("fmt")) fmt = 'png'
if (fmt eq 'pdf') {
  fs = 7
  set terminal pdfcairo size 3.50in,2.60in font 'Sans,7' linewidth 1.5
} else { if (fmt eq 'svg') {
  fs = 13
  set terminal svg size 700,520 font 'Sans,13' linewidth 1.5 background '#ffffff'
} else {
  fs = 19
  set terminal pngcairo size 1050,780 font 'Sans,19' linewidth 2.5
} }
set output 'power_standard.'.fmt
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
set title 'Power, standard'
xl = 'time in combination (s)'
yl = 'average power (W)'
set xlabel xl
set ylabel yl
set key below horizontal
set grid lc rgb '#dddddd'
set border 3
set tics nomirror
set xrange [-0.146490048:5.02949165]
set yrange [402.250744:562.476799]
unset title
unset key
set tics font f7
set xlabel font f75
set ylabel font f75
set xtics 2
set multiplot layout 2,2 title 'Power, standard' font f9
set xlabel ''
set ylabel yl
set title 'baseline' font f8
plot \
  'power_standard.dat' index 0 using 1:2 with lines lw 1.5 dt 1 lc rgb '#000000' notitle
set xlabel ''
set ylabel ''
set title 'static_optimal' font f8
plot \
  'power_standard.dat' index 1 using 1:2 with lines lw 1.5 dt 1 lc rgb '#E69F00' notitle
set xlabel xl
set ylabel yl
set title 'kernel_aware_ttha' font f8
plot \
  'power_standard.dat' index 2 using 1:2 with lines lw 1.5 dt 1 lc rgb '#0072B2' notitle
set xlabel xl
set ylabel ''
set title 'topk_minus_one' font f8
plot \
  'power_standard.dat' index 3 using 1:2 with lines lw 1.5 dt 1 lc rgb '#56B4E9' notitle
unset multiplot
