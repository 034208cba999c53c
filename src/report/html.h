// The HTML report of `trainbench compare --html`: one self-contained page (inline CSS, inline SVG
// drawn here, no scripts, nothing fetched) with, per workload, the comparison table, bars of
// train+test time and images/s (projected and derived values hatched), the training loss, a
// utilisation timeline per run (phases shaded) and the per-layer breakdown of any profile given.
// A chart with fewer than two points to draw is left out. Every number is text in the page.
#pragma once
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "report/compare.h"

namespace tb {

std::string html_escape(std::string_view s);

// Charts, exposed for tests. Each returns one <svg> element.
struct SvgBar {
  std::string label;
  std::vector<double> parts;  // stacked segments; empty: the value is unknown
  std::string value_text;     // printed after the bar
  bool hatched = false;       // a projected or derived value, not a measured one
};
std::string svg_hbars(const std::vector<SvgBar>& bars, const std::vector<std::string>& part_names);

struct SvgSeries {
  std::string name;
  std::vector<std::pair<double, double>> points;  // (x, y)
};
struct SvgShade {  // a shaded x range (a phase of the run)
  double x0 = 0, x1 = 0;
  std::string label;
};
struct SvgAxes {
  std::string x_label, y_label;
  bool y_from_zero = true;
  double y_max = 0;  // > 0: fixed top (100 for percentages)
};
std::string svg_lines(const std::vector<SvgSeries>& series, const SvgAxes& axes,
                      const std::vector<SvgShade>& shades = {});

// The page's title and the paragraphs before the tables (`suite`: what ran, where).
struct HtmlPage {
  std::string title = "trainbench compare";
  std::vector<std::string> intro;
};
std::string render_compare_html(const Comparison& c, const HtmlPage& page = {});

}  // namespace tb
