# energy_per_token: Energy per token (mean, 95% CI) (thermoe analyze). Data: energy_per_token.dat. Restyle freely, then render with
#   gnuplot -e "fmt='png'" energy_per_token.gp     (fmt: png, pdf or svg)
if (!exists("fmt")) fmt = 'png'
if (fmt eq 'pdf') {
  set terminal pdfcairo size 3.5in,2.6in font 'Sans,7' linewidth 1.5
} else { if (fmt eq 'svg') {
  set terminal svg size 700,520 font 'Sans,13' linewidth 1.5 background '#ffffff'
} else {
  set terminal pngcairo size 1050,780 font 'Sans,19' linewidth 2.5
} }
set output 'energy_per_token.'.fmt
set termoption noenhanced
set title 'Energy per token (mean, 95% CI)'
set xlabel ''
set ylabel 'energy per token (J)'
set key below horizontal
set grid lc rgb '#dddddd'
set border 3
set tics nomirror
set xrange [-0.6:0.6]
set style fill solid 0.85 border lc rgb '#333333'
set boxwidth 0.120000 absolute
set xtics ('standard' 0) rotate by -20 left
set grid noxtics
set yrange [0:0.0228093222]
plot \
  'energy_per_token.dat' index 0 using 1:2 with boxes lc rgb '#000000' title 'baseline', \
  'energy_per_token.dat' index 0 using 1:3:(0):($4-$3) with vectors heads size screen 0.008,90 lc rgb '#333333' lw 1 notitle, \
  'energy_per_token.dat' index 1 using 1:2 with boxes lc rgb '#E69F00' title 'static_optimal', \
  'energy_per_token.dat' index 1 using 1:3:(0):($4-$3) with vectors heads size screen 0.008,90 lc rgb '#333333' lw 1 notitle, \
  'energy_per_token.dat' index 2 using 1:2 with boxes lc rgb '#0072B2' title 'kernel_aware_ttha', \
  'energy_per_token.dat' index 2 using 1:3:(0):($4-$3) with vectors heads size screen 0.008,90 lc rgb '#333333' lw 1 notitle, \
  'energy_per_token.dat' index 3 using 1:2 with boxes lc rgb '#009E73' title 'hierarchical_adaptive', \
  'energy_per_token.dat' index 3 using 1:3:(0):($4-$3) with vectors heads size screen 0.008,90 lc rgb '#333333' lw 1 notitle, \
  'energy_per_token.dat' index 4 using 1:2 with boxes lc rgb '#D55E00' title 'predictive_thermal', \
  'energy_per_token.dat' index 4 using 1:3:(0):($4-$3) with vectors heads size screen 0.008,90 lc rgb '#333333' lw 1 notitle, \
  'energy_per_token.dat' index 5 using 1:2 with boxes lc rgb '#CC79A7' title 'multi_gpu_aware', \
  'energy_per_token.dat' index 5 using 1:3:(0):($4-$3) with vectors heads size screen 0.008,90 lc rgb '#333333' lw 1 notitle
