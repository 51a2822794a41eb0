# latency_ccdf_standard (thermoe analyze). Data: latency_ccdf_standard.dat. Restyle freely, then render with
#   gnuplot -e "fmt='png'" latency_ccdf_standard.gp     (fmt: png, pdf or svg)
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
set output 'latency_ccdf_standard.'.fmt
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
set title 'Latency CCDF, standard'
xl = 'batch latency (ms)'
yl = 'fraction of batches >= latency'
set xlabel xl
set ylabel yl
set key below horizontal
set grid lc rgb '#dddddd'
set border 3
set tics nomirror
set xrange [364.482828:438.5324]
set logscale y
set yrange [0.0277777778:1.3]
set format y '%g'
plot \
  'latency_ccdf_standard.dat' index 0 using 1:2 with steps lw 1.5 lc rgb '#000000' title 'baseline', \
  'latency_ccdf_standard.dat' index 1 using 1:2 with steps lw 1.5 lc rgb '#E69F00' title 'static_optimal', \
  'latency_ccdf_standard.dat' index 2 using 1:2 with steps lw 1.5 lc rgb '#0072B2' title 'kernel_aware_ttha', \
  'latency_ccdf_standard.dat' index 3 using 1:2 with steps lw 1.5 lc rgb '#56B4E9' title 'topk_minus_one'
