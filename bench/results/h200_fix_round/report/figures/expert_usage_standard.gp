# expert_usage_standard (thermoe analyze). Data: expert_usage_standard.dat. Restyle freely, then render with
#   gnuplot -e "fmt='png'" expert_usage_standard.gp     (fmt: png, pdf or svg)
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
set output 'expert_usage_standard.'.fmt
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
set title 'Expert usage, standard'
xl = 'expert'
yl = ''
set xlabel xl
set ylabel yl
set key below horizontal
set grid lc rgb '#dddddd'
set border 3
set tics nomirror
set palette defined (0 '#440154', 0.25 '#3B528B', 0.5 '#21908C', 0.75 '#5DC863', 1 '#FDE725')
set cbrange [0.0887044271:0.169574653]
set xrange [-0.5:7.5]
set yrange [-0.5:3.5]
set grid noxtics noytics
unset key
set border 15
set rmargin 9
set cblabel 'share of token copies'
set ytics ('baseline' 0, 'static_optimal' 1, 'kernel_aware_ttha' 2, 'topk_minus_one' 3)
plot 'expert_usage_standard.dat' using 1:2:(0.5):(0.5):3 with boxxyerror fs solid 1.0 noborder lc palette notitle
