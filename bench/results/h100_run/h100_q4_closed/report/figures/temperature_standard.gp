# temperature_standard: Temperature, standard (solid GPU, dashed HBM) (thermoe analyze). Data: temperature_standard.dat. Restyle freely, then render with
#   gnuplot -e "fmt='png'" temperature_standard.gp     (fmt: png, pdf or svg)
if (!exists("fmt")) fmt = 'png'
if (fmt eq 'pdf') {
  set terminal pdfcairo size 3.5in,2.6in font 'Sans,7' linewidth 1.5
} else { if (fmt eq 'svg') {
  set terminal svg size 700,520 font 'Sans,13' linewidth 1.5 background '#ffffff'
} else {
  set terminal pngcairo size 1050,780 font 'Sans,19' linewidth 2.5
} }
set output 'temperature_standard.'.fmt
set termoption noenhanced
set title 'Temperature, standard (solid GPU, dashed HBM)'
set xlabel 'batch'
set ylabel 'peak temperature (C)'
set key below horizontal
set grid lc rgb '#dddddd'
set border 3
set tics nomirror
set xrange [-47.97:1646.97]
set yrange [38.02:46.98]
plot \
  'temperature_standard.dat' index 0 using 1:2 with lines lw 1.5 dt 1 lc rgb '#000000' title 'baseline', \
  'temperature_standard.dat' index 1 using 1:2 with lines lw 1.5 dt 2 lc rgb '#000000' notitle, \
  'temperature_standard.dat' index 2 using 1:2 with lines lw 1.5 dt 1 lc rgb '#E69F00' title 'static_optimal', \
  'temperature_standard.dat' index 3 using 1:2 with lines lw 1.5 dt 2 lc rgb '#E69F00' notitle, \
  'temperature_standard.dat' index 4 using 1:2 with lines lw 1.5 dt 1 lc rgb '#0072B2' title 'kernel_aware_ttha', \
  'temperature_standard.dat' index 5 using 1:2 with lines lw 1.5 dt 2 lc rgb '#0072B2' notitle, \
  'temperature_standard.dat' index 6 using 1:2 with lines lw 1.5 dt 1 lc rgb '#009E73' title 'hierarchical_adaptive', \
  'temperature_standard.dat' index 7 using 1:2 with lines lw 1.5 dt 2 lc rgb '#009E73' notitle, \
  'temperature_standard.dat' index 8 using 1:2 with lines lw 1.5 dt 1 lc rgb '#D55E00' title 'predictive_thermal', \
  'temperature_standard.dat' index 9 using 1:2 with lines lw 1.5 dt 2 lc rgb '#D55E00' notitle, \
  'temperature_standard.dat' index 10 using 1:2 with lines lw 1.5 dt 1 lc rgb '#CC79A7' title 'multi_gpu_aware', \
  'temperature_standard.dat' index 11 using 1:2 with lines lw 1.5 dt 2 lc rgb '#CC79A7' notitle
