# ttha_loss_standard_kernel_aware_ttha (thermoe analyze). Data: ttha_loss_standard_kernel_aware_ttha.dat. Restyle freely, then render with
#   gnuplot -e "fmt='png'" ttha_loss_standard_kernel_aware_ttha.gp     (fmt: png, pdf or svg)
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
set output 'ttha_loss_standard_kernel_aware_ttha.'.fmt
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
set title 'TTHA loss, kernel_aware_ttha, standard'
xl = 'time in combination (s)'
yl = 'loss term'
set xlabel xl
set ylabel yl
set key below horizontal
set grid lc rgb '#dddddd'
set border 3
set tics nomirror
set xrange [-0.142952494:4.90803563]
set yrange [-0.115324487:0.12238995]
unset title
unset key
set tics font f7
set xlabel font f75
set ylabel font f75
set xtics 2
set multiplot layout 2,3 title 'TTHA loss, kernel_aware_ttha, standard' font f9
set xlabel ''
set ylabel yl
set title 'power' font f8
set yrange [-0.00134327652:0.0523959261]
plot 'ttha_loss_standard_kernel_aware_ttha.dat' index 0 using 1:2 with lines lw 1.5 lc rgb '#D55E00' notitle
set xlabel ''
set ylabel ''
set title 'temperature' font f8
set yrange [-1:1]
plot 'ttha_loss_standard_kernel_aware_ttha.dat' index 1 using 1:2 with lines lw 1.5 lc rgb '#E69F00' notitle
set xlabel ''
set ylabel ''
set title 'latency penalty' font f8
set yrange [-3.30009064e-07:5.83016013e-06]
plot 'ttha_loss_standard_kernel_aware_ttha.dat' index 2 using 1:2 with lines lw 1.5 lc rgb '#0072B2' notitle
set xlabel xl
set ylabel yl
set title 'throughput bonus' font f8
set yrange [0.10380028:0.109986662]
plot 'ttha_loss_standard_kernel_aware_ttha.dat' index 3 using 1:2 with lines lw 1.5 lc rgb '#009E73' notitle
set xlabel xl
set ylabel ''
set title 'fidelity' font f8
set yrange [5.26185841e-07:5.61212791e-06]
plot 'ttha_loss_standard_kernel_aware_ttha.dat' index 4 using 1:2 with lines lw 1.5 lc rgb '#CC79A7' notitle
set xlabel xl
set ylabel ''
set title 'total' font f8
set yrange [-0.105156201:-0.0572497724]
plot 'ttha_loss_standard_kernel_aware_ttha.dat' index 5 using 1:2 with lines lw 1.5 lc rgb '#000000' notitle
unset multiplot
