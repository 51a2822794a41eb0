# latency_pct_large_batch: Latency percentiles, large_batch (thermoe analyze). Data: latency_pct_large_batch.dat. Restyle freely, then render with
#   gnuplot -e "fmt='png'" latency_pct_large_batch.gp     (fmt: png, pdf or svg)
if (!exists("fmt")) fmt = 'png'
if (fmt eq 'pdf') {
  set terminal pdfcairo size 3.5in,2.6in font 'Sans,7' linewidth 1.5
} else { if (fmt eq 'svg') {
  set terminal svg size 700,520 font 'Sans,13' linewidth 1.5 background '#ffffff'
} else {
  set terminal pngcairo size 1050,780 font 'Sans,19' linewidth 2.5
} }
set output 'latency_pct_large_batch.'.fmt
set termoption noenhanced
set title 'Latency percentiles, large_batch'
set xlabel ''
set ylabel 'batch latency (ms)'
set key below horizontal
set grid lc rgb '#dddddd'
set border 3
set tics nomirror
set xrange [-0.6:2.6]
set style fill solid 0.85 border lc rgb '#333333'
set boxwidth 0.120000 absolute
set xtics ('p50' 0, 'p90' 1, 'p99' 2) rotate by -20 left
set grid noxtics
set yrange [0:1.79680254]
plot \
  'latency_pct_large_batch.dat' index 0 using 1:2 with boxes lc rgb '#000000' title 'baseline', \
  'latency_pct_large_batch.dat' index 1 using 1:2 with boxes lc rgb '#E69F00' title 'static_optimal', \
  'latency_pct_large_batch.dat' index 2 using 1:2 with boxes lc rgb '#0072B2' title 'kernel_aware_ttha', \
  'latency_pct_large_batch.dat' index 3 using 1:2 with boxes lc rgb '#009E73' title 'hierarchical_adaptive', \
  'latency_pct_large_batch.dat' index 4 using 1:2 with boxes lc rgb '#D55E00' title 'predictive_thermal', \
  'latency_pct_large_batch.dat' index 5 using 1:2 with boxes lc rgb '#CC79A7' title 'multi_gpu_aware'
