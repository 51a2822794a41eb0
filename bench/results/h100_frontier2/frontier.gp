set terminal pngcairo size 1000,600 noenhanced
set output "frontier.png"
set xlabel "perplexity change vs baseline (%)"
set ylabel "energy per token change vs baseline (%)"
set grid
set key outside right
plot "frontier.dat" using 4:5:(sprintf("%s %s %s", stringcolumn(1), stringcolumn(2), stringcolumn(3))) with labels point pt 7 offset 1,0.5 font ",8" notitle
