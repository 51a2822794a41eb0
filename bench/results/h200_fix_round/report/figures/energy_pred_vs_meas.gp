# energy_pred_vs_meas (thermoe analyze). Data: energy_pred_vs_meas.dat. Restyle freely, then render with
#   gnuplot -e "fmt='png'" energy_pred_vs_meas.gp     (fmt: png, pdf or svg)
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
set output 'energy_pred_vs_meas.'.fmt
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
set title 'Energy per batch: predicted vs measured'
xl = 'predicted energy per batch (mJ), cost model'
yl = 'measured energy per batch (mJ), NVML'
set xlabel xl
set ylabel yl
set key below horizontal
set grid lc rgb '#dddddd'
set border 3
set tics nomirror
set xrange [148515.797:227220.449]
set yrange [148515.797:227220.449]
set size ratio -1
set key font f7
set samples 2
plot \
  x with lines dt 2 lw 1 lc rgb '#777777' title 'predicted = measured', \
  'energy_pred_vs_meas.dat' index 0 using 1:2 with points pt 7 ps 0.5 lc rgb '#000000' title 'baseline', \
  'energy_pred_vs_meas.dat' index 1 using 1:2 with points pt 7 ps 0.5 lc rgb '#E69F00' title 'static_optimal', \
  'energy_pred_vs_meas.dat' index 2 using 1:2 with points pt 7 ps 0.5 lc rgb '#0072B2' title 'kernel_aware_ttha', \
  'energy_pred_vs_meas.dat' index 3 using 1:2 with points pt 7 ps 0.5 lc rgb '#56B4E9' title 'topk_minus_one'
