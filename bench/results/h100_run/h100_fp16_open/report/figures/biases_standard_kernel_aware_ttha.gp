# biases_standard_kernel_aware_ttha: Learned biases, kernel_aware_ttha, standard (thermoe analyze). Data: biases_standard_kernel_aware_ttha.dat. Restyle freely, then render with
#   gnuplot -e "fmt='png'" biases_standard_kernel_aware_ttha.gp     (fmt: png, pdf or svg)
if (!exists("fmt")) fmt = 'png'
if (fmt eq 'pdf') {
  set terminal pdfcairo size 3.5in,2.6in font 'Sans,7' linewidth 1.5
} else { if (fmt eq 'svg') {
  set terminal svg size 700,520 font 'Sans,13' linewidth 1.5 background '#ffffff'
} else {
  set terminal pngcairo size 1050,780 font 'Sans,19' linewidth 2.5
} }
set output 'biases_standard_kernel_aware_ttha.'.fmt
set termoption noenhanced
set title 'Learned biases, kernel_aware_ttha, standard'
set xlabel 'expert'
set ylabel 'batch'
set key below horizontal
set grid lc rgb '#dddddd'
set border 3
set tics nomirror
set palette defined (0 '#0072B2', 0.5 '#ffffff', 1 '#D55E00')
set cbrange [-0.015423134:0.015423134]
set cblabel 'bias'
set xrange [-0.5:7.5]
set yrange [-0.5:3999.5]
set grid noxtics noytics
unset key
set border 15
set rmargin 9
plot 'biases_standard_kernel_aware_ttha.dat' using 1:2:(0.5):(0.5):3 with boxxyerror fs solid 1.0 noborder lc palette notitle
