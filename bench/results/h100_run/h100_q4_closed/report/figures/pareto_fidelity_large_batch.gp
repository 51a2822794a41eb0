# pareto_fidelity_large_batch: Energy vs fidelity, large_batch (thermoe analyze). Data: pareto_fidelity_large_batch.dat. Restyle freely, then render with
#   gnuplot -e "fmt='png'" pareto_fidelity_large_batch.gp     (fmt: png, pdf or svg)
if (!exists("fmt")) fmt = 'png'
if (fmt eq 'pdf') {
  set terminal pdfcairo size 3.5in,2.6in font 'Sans,7' linewidth 1.5
} else { if (fmt eq 'svg') {
  set terminal svg size 700,520 font 'Sans,13' linewidth 1.5 background '#ffffff'
} else {
  set terminal pngcairo size 1050,780 font 'Sans,19' linewidth 2.5
} }
set output 'pareto_fidelity_large_batch.'.fmt
set termoption noenhanced
set title 'Energy vs fidelity, large_batch'
set xlabel '1 - top-k agreement with baseline'
set ylabel 'energy per token (J)'
set key below horizontal
set grid lc rgb '#dddddd'
set border 3
set tics nomirror
set xrange [-0.00010512085:0.00360914917]
set yrange [0.00227940507:0.00239308622]
plot \
  'pareto_fidelity_large_batch.dat' index 6 using 1:2 with lines lw 1 dt 2 lc rgb '#777777' title 'Pareto frontier', \
  'pareto_fidelity_large_batch.dat' index 0 using 1:2 with points pt 7 ps 2.4 lc rgb '#000000' title 'baseline', \
  'pareto_fidelity_large_batch.dat' index 1 using 1:2 with points pt 7 ps 2.4 lc rgb '#E69F00' title 'static_optimal', \
  'pareto_fidelity_large_batch.dat' index 2 using 1:2 with points pt 7 ps 2.4 lc rgb '#0072B2' title 'kernel_aware_ttha', \
  'pareto_fidelity_large_batch.dat' index 3 using 1:2 with points pt 7 ps 2.4 lc rgb '#009E73' title 'hierarchical_adaptive', \
  'pareto_fidelity_large_batch.dat' index 4 using 1:2 with points pt 7 ps 2.4 lc rgb '#D55E00' title 'predictive_thermal', \
  'pareto_fidelity_large_batch.dat' index 5 using 1:2 with points pt 7 ps 2.4 lc rgb '#CC79A7' title 'multi_gpu_aware'
