# energy_per_token (thermoe analyze). Data: energy_per_token.dat. Restyle freely, then render with
#   gnuplot -e "fmt='png'" energy_per_token.gp     (fmt: png, pdf or svg)
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
set output 'energy_per_token.'.fmt
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
set title 'Energy per token (mean, 95% CI)'
xl = ''
yl = 'energy per token (mJ)'
set xlabel xl
set ylabel yl
set key below horizontal
set grid lc rgb '#dddddd'
set border 3
set tics nomirror
set xrange [-0.6:0.6]
set style fill solid 0.85 border lc rgb '#333333'
set boxwidth 0.180000 absolute
set xtics ('standard' 0) rotate by -20 left
set grid noxtics
set yrange [0:120.092116]
plot \
  'energy_per_token.dat' index 0 using 1:2 with boxes lc rgb '#000000' title 'baseline', \
  'energy_per_token.dat' index 0 using 1:3:(0):($4-$3) with vectors heads size screen 0.008,90 lc rgb '#333333' lw 1 notitle, \
  'energy_per_token.dat' index 1 using 1:2 with boxes lc rgb '#E69F00' title 'static_optimal', \
  'energy_per_token.dat' index 1 using 1:3:(0):($4-$3) with vectors heads size screen 0.008,90 lc rgb '#333333' lw 1 notitle, \
  'energy_per_token.dat' index 2 using 1:2 with boxes lc rgb '#0072B2' title 'kernel_aware_ttha', \
  'energy_per_token.dat' index 2 using 1:3:(0):($4-$3) with vectors heads size screen 0.008,90 lc rgb '#333333' lw 1 notitle, \
  'energy_per_token.dat' index 3 using 1:2 with boxes lc rgb '#56B4E9' title 'topk_minus_one', \
  'energy_per_token.dat' index 3 using 1:3:(0):($4-$3) with vectors heads size screen 0.008,90 lc rgb '#333333' lw 1 notitle
