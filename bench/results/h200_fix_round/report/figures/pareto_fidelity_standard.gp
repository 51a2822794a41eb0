# pareto_fidelity_standard (thermoe analyze). Data: pareto_fidelity_standard.dat. Restyle freely, then render with
#   gnuplot -e "fmt='png'" pareto_fidelity_standard.gp     (fmt: png, pdf or svg)
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
set output 'pareto_fidelity_standard.'.fmt
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
set title 'Energy vs fidelity, standard'
xl = '1 - top-k agreement with baseline'
yl = 'energy per token (mJ)'
set xlabel xl
set ylabel yl
set key below horizontal
set grid lc rgb '#dddddd'
set border 3
set tics nomirror
set xrange [-0.015:0.515]
set yrange [80.3540752:107.495153]
plot \
  'pareto_fidelity_standard.dat' index 4 using 1:2 with lines lw 1 dt 2 lc rgb '#777777' title 'Pareto frontier', \
  'pareto_fidelity_standard.dat' index 0 using 1:2 with points pt 7 ps 2.4 lc rgb '#000000' title 'baseline', \
  'pareto_fidelity_standard.dat' index 1 using 1:2 with points pt 7 ps 2.4 lc rgb '#E69F00' title 'static_optimal', \
  'pareto_fidelity_standard.dat' index 2 using 1:2 with points pt 7 ps 2.4 lc rgb '#0072B2' title 'kernel_aware_ttha', \
  'pareto_fidelity_standard.dat' index 3 using 1:2 with points pt 7 ps 2.4 lc rgb '#56B4E9' title 'topk_minus_one'
