# latency_cdf_standard: Latency CDF, standard (thermoe analyze). Data: latency_cdf_standard.dat. Restyle freely, then render with
#   gnuplot -e "fmt='png'" latency_cdf_standard.gp     (fmt: png, pdf or svg)
if (!exists("fmt")) fmt = 'png'
if (fmt eq 'pdf') {
  set terminal pdfcairo size 3.5in,2.6in font 'Sans,7' linewidth 1.5
} else { if (fmt eq 'svg') {
  set terminal svg size 700,520 font 'Sans,13' linewidth 1.5 background '#ffffff'
} else {
  set terminal pngcairo size 1050,780 font 'Sans,19' linewidth 2.5
} }
set output 'latency_cdf_standard.'.fmt
set termoption noenhanced
set title 'Latency CDF, standard'
set xlabel 'batch latency (ms)'
set ylabel 'fraction of batches'
set key below horizontal
set grid lc rgb '#dddddd'
set border 3
set tics nomirror
set xrange [0.497940808:0.852235229]
set yrange [-0.06:1.06]
set yrange [0:1.02]
plot \
  'latency_cdf_standard.dat' index 0 using 1:2 with steps lw 1.5 lc rgb '#000000' title 'baseline', \
  'latency_cdf_standard.dat' index 1 using 1:2 with steps lw 1.5 lc rgb '#E69F00' title 'static_optimal', \
  'latency_cdf_standard.dat' index 2 using 1:2 with steps lw 1.5 lc rgb '#0072B2' title 'kernel_aware_ttha', \
  'latency_cdf_standard.dat' index 3 using 1:2 with steps lw 1.5 lc rgb '#009E73' title 'hierarchical_adaptive', \
  'latency_cdf_standard.dat' index 4 using 1:2 with steps lw 1.5 lc rgb '#D55E00' title 'predictive_thermal', \
  'latency_cdf_standard.dat' index 5 using 1:2 with steps lw 1.5 lc rgb '#CC79A7' title 'multi_gpu_aware'
