# expert_usage_standard: Expert usage, standard (thermoe analyze). Data: expert_usage_standard.dat. Restyle freely, then render with
#   gnuplot -e "fmt='png'" expert_usage_standard.gp     (fmt: png, pdf or svg)
if (!exists("fmt")) fmt = 'png'
if (fmt eq 'pdf') {
  set terminal pdfcairo size 3.5in,2.6in font 'Sans,7' linewidth 1.5
} else { if (fmt eq 'svg') {
  set terminal svg size 700,520 font 'Sans,13' linewidth 1.5 background '#ffffff'
} else {
  set terminal pngcairo size 1050,780 font 'Sans,19' linewidth 2.5
} }
set output 'expert_usage_standard.'.fmt
set termoption noenhanced
set title 'Expert usage, standard'
set xlabel 'expert'
set ylabel ''
set key below horizontal
set grid lc rgb '#dddddd'
set border 3
set tics nomirror
set palette defined (0 '#440154', 0.25 '#3B528B', 0.5 '#21908C', 0.75 '#5DC863', 1 '#FDE725')
set cbrange [0.061875:0.168617187]
set cblabel 'share of token copies'
set xrange [-0.5:7.5]
set yrange [-0.5:5.5]
set grid noxtics noytics
unset key
set border 15
set rmargin 9
set ytics ('baseline' 0, 'static_optimal' 1, 'kernel_aware_ttha' 2, 'hierarchical_adaptive' 3, 'predictive_thermal' 4, 'multi_gpu_aware' 5)
plot 'expert_usage_standard.dat' using 1:2:(0.5):(0.5):3 with boxxyerror fs solid 1.0 noborder lc palette notitle
