# power_standard: Power, standard (thermoe analyze). Data: power_standard.dat. Restyle freely, then render with
#   gnuplot -e "fmt='png'" power_standard.gp     (fmt: png, pdf or svg)
if (!exists("fmt")) fmt = 'png'
if (fmt eq 'pdf') {
  set terminal pdfcairo size 3.5in,2.6in font 'Sans,7' linewidth 1.5
} else { if (fmt eq 'svg') {
  set terminal svg size 700,520 font 'Sans,13' linewidth 1.5 background '#ffffff'
} else {
  set terminal pngcairo size 1050,780 font 'Sans,19' linewidth 2.5
} }
set output 'power_standard.'.fmt
set termoption noenhanced
set title 'Power, standard'
set xlabel 'batch'
set ylabel 'average power (W)'
set key below horizontal
set grid lc rgb '#dddddd'
set border 3
set tics nomirror
set xrange [-119.97:4118.97]
set yrange [99.54252:429.47548]
plot \
  'power_standard.dat' index 0 using 1:2 with lines lw 1.5 dt 1 lc rgb '#000000' title 'baseline', \
  'power_standard.dat' index 1 using 1:2 with lines lw 1.5 dt 1 lc rgb '#E69F00' title 'static_optimal', \
  'power_standard.dat' index 2 using 1:2 with lines lw 1.5 dt 1 lc rgb '#0072B2' title 'kernel_aware_ttha', \
  'power_standard.dat' index 3 using 1:2 with lines lw 1.5 dt 1 lc rgb '#009E73' title 'hierarchical_adaptive', \
  'power_standard.dat' index 4 using 1:2 with lines lw 1.5 dt 1 lc rgb '#D55E00' title 'predictive_thermal', \
  'power_standard.dat' index 5 using 1:2 with lines lw 1.5 dt 1 lc rgb '#CC79A7' title 'multi_gpu_aware'
