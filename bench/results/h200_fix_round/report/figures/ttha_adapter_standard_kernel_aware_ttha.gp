# ttha_adapter_standard_kernel_aware_ttha (thermoe analyze). Data: ttha_adapter_standard_kernel_aware_ttha.dat. Restyle freely, then render with
#   gnuplot -e "fmt='png'" ttha_adapter_standard_kernel_aware_ttha.gp     (fmt: png, pdf or svg)
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
set output 'ttha_adapter_standard_kernel_aware_ttha.'.fmt
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
set title 'TTHA adapter, kernel_aware_ttha, standard'
xl = 'time in combination (s)'
yl = ''
set xlabel xl
set ylabel yl
set key below horizontal
set grid lc rgb '#dddddd'
set border 3
set tics nomirror
set xrange [-0.14566773:5.00125873]
unset title
unset key
set tics font f7
set xlabel font f75
set ylabel font f75
set xtics 2
set multiplot layout 1,3 title 'TTHA adapter, kernel_aware_ttha, standard' font f9
set yrange [-31.8990757:1.83982069]
set xlabel xl
set ylabel yl
set title 'bias per expert (colour: expert index)' font f8
set ylabel 'bias (logit units)'
set palette defined (0 '#0072B2', 0.5 '#009E73', 1 '#E69F00')
unset colorbox
set cbrange [0:39]
plot 'ttha_adapter_standard_kernel_aware_ttha.dat' index 0 using 1:2:3 with lines lw 1 lc palette notitle
set yrange [0.000604710688:0.00200565988]
set xlabel xl
set ylabel ''
set title 'gradient norm of each update' font f8
set ylabel 'L2 norm'
plot 'ttha_adapter_standard_kernel_aware_ttha.dat' index 1 using 1:2 with lines lw 1.5 lc rgb '#000000' notitle
set yrange [0.000385714286:0.00118571428]
set xlabel xl
set ylabel ''
set title 'learning rate' font f8
set ylabel 'rate'
plot 'ttha_adapter_standard_kernel_aware_ttha.dat' index 2 using 1:2 with lines lw 1.5 lc rgb '#777777' notitle
unset multiplot
