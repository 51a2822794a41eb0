# ttha_loss_standard_kernel_aware_ttha: TTHA loss, kernel_aware_ttha, standard (thermoe analyze). Data: ttha_loss_standard_kernel_aware_ttha.dat. Restyle freely, then render with
#   gnuplot -e "fmt='png'" ttha_loss_standard_kernel_aware_ttha.gp     (fmt: png, pdf or svg)
if (!exists("fmt")) fmt = 'png'
if (fmt eq 'pdf') {
  set terminal pdfcairo size 3.5in,2.6in font 'Sans,7' linewidth 1.5
} else { if (fmt eq 'svg') {
  set terminal svg size 700,520 font 'Sans,13' linewidth 1.5 background '#ffffff'
} else {
  set terminal pngcairo size 1050,780 font 'Sans,19' linewidth 2.5
} }
set output 'ttha_loss_standard_kernel_aware_ttha.'.fmt
set termoption noenhanced
set title 'TTHA loss, kernel_aware_ttha, standard'
set xlabel 'batch'
set ylabel 'loss term'
set key below horizontal
set grid lc rgb '#dddddd'
set border 3
set tics nomirror
set xrange [-119.97:4118.97]
set yrange [-1.48578692:1.53075726]
plot \
  'ttha_loss_standard_kernel_aware_ttha.dat' index 0 using 1:2 with lines lw 1.5 dt 1 lc rgb '#D55E00' title 'power', \
  'ttha_loss_standard_kernel_aware_ttha.dat' index 1 using 1:2 with lines lw 1.5 dt 2 lc rgb '#E69F00' title 'temperature', \
  'ttha_loss_standard_kernel_aware_ttha.dat' index 2 using 1:2 with lines lw 1.5 dt 3 lc rgb '#0072B2' title 'latency penalty', \
  'ttha_loss_standard_kernel_aware_ttha.dat' index 3 using 1:2 with lines lw 1.5 dt 1 lc rgb '#009E73' title 'throughput bonus', \
  'ttha_loss_standard_kernel_aware_ttha.dat' index 4 using 1:2 with lines lw 1.5 dt 2 lc rgb '#CC79A7' title 'fidelity', \
  'ttha_loss_standard_kernel_aware_ttha.dat' index 5 using 1:2 with lines lw 1.5 dt 1 lc rgb '#000000' title 'total'
