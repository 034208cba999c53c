#include "report/html.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>

#include "report/profile.h"

namespace tb {

using nlohmann::json;

std::string html_escape(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (char c : s) {
    switch (c) {
      case '&':
        out += "&amp;";
        break;
      case '<':
        out += "&lt;";
        break;
      case '>':
        out += "&gt;";
        break;
      case '"':
        out += "&quot;";
        break;
      case '\'':
        out += "&#39;";
        break;
      default:
        out += c;
    }
  }
  return out;
}

namespace {

const char* const kColors[] = {"#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f",
                               "#edc948", "#b07aa1", "#ff9da7", "#9c755f", "#bab0ac"};
const char* color(size_t i) {
  return kColors[i % (sizeof(kColors) / sizeof(kColors[0]))];
}

const char* phase_color(const std::string& phase) {
  if (phase == "load") return "#f3ecd8";
  if (phase == "train") return "#e3edf7";
  if (phase == "test") return "#e5f3e0";
  return "#eeeeee";
}

// Numbers in SVG coordinates: short, no exponent.
std::string px(double v) {
  return fmt::format("{:.1f}", v);
}

// Round tick steps (1, 2, 5 x 10^k) covering [lo, hi] with about five intervals.
std::vector<double> ticks(double lo, double hi) {
  if (!(hi > lo)) hi = lo + 1;
  const double raw = (hi - lo) / 5;
  const double mag = std::pow(10.0, std::floor(std::log10(raw)));
  double step = mag;
  for (double m : {1.0, 2.0, 5.0, 10.0})
    if (raw <= m * mag) {
      step = m * mag;
      break;
    }
  // Counted (seven at most), not stepped until past hi: where the values are too large for the
  // step to move them (1e16 and 1e16 + 2), that loop would never end.
  std::vector<double> out;
  const double first = std::ceil(lo / step) * step;
  for (int k = 0; k < 8; ++k) {
    const double v = first + k * step;
    if (!(v <= hi + step * 1e-9)) break;
    out.push_back(std::abs(v) < step * 1e-9 ? 0 : v);
  }
  return out;
}

std::string tick_text(double v) {
  return fmt::format("{:g}", v);
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Charts

std::string svg_hbars(const std::vector<SvgBar>& bars, const std::vector<std::string>& part_names) {
  const double width = 960, label_w = 360, bar_x = 370, bar_w = 430, row_h = 26;
  const double legend_h = part_names.size() > 1 ? 24 : 0;
  const double height = legend_h + row_h * double(bars.size()) + 8;
  double max = 0;
  for (const SvgBar& b : bars) {
    double sum = 0;
    for (double p : b.parts) sum += std::max(0.0, p);
    max = std::max(max, sum);
  }
  std::string s = fmt::format(
      "<svg xmlns=\"http://www.w3.org/2000/svg\" class=\"chart\" width=\"{}\" height=\"{}\" "
      "viewBox=\"0 0 {} {}\">\n",
      px(width), px(height), px(width), px(height));
  // Hatching: white stripes over the bar's colour. Ids are unique within one page.
  static int patterns = 0;
  std::string hatch;
  if (std::any_of(bars.begin(), bars.end(), [](const SvgBar& b) { return b.hatched; })) {
    hatch = fmt::format("hatch{}", ++patterns);
    s += fmt::format(
        "<defs><pattern id=\"{}\" width=\"6\" height=\"6\" patternUnits=\"userSpaceOnUse\" "
        "patternTransform=\"rotate(45)\"><rect width=\"3\" height=\"6\" fill=\"#fff\" "
        "fill-opacity=\"0.75\"/></pattern></defs>\n",
        hatch);
  }
  for (size_t k = 0; k < part_names.size() && part_names.size() > 1; ++k)
    s += fmt::format(
        "<rect x=\"{}\" y=\"6\" width=\"12\" height=\"12\" fill=\"{}\"/><text x=\"{}\" y=\"16\">{}"
        "</text>\n",
        px(bar_x + 150 * double(k)), color(k), px(bar_x + 150 * double(k) + 16),
        html_escape(part_names[k]));
  for (size_t i = 0; i < bars.size(); ++i) {
    const SvgBar& b = bars[i];
    const double y = legend_h + row_h * double(i) + 4;
    s += fmt::format("<text x=\"{}\" y=\"{}\" text-anchor=\"end\">{}</text>\n", px(label_w),
                     px(y + 13), html_escape(b.label));
    double x = bar_x;
    for (size_t k = 0; k < b.parts.size(); ++k) {
      const double w = max > 0 ? bar_w * std::max(0.0, b.parts[k]) / max : 0;
      s += fmt::format("<rect x=\"{}\" y=\"{}\" width=\"{}\" height=\"18\" fill=\"{}\"/>\n", px(x),
                       px(y), px(w), part_names.size() > 1 ? color(k) : color(i));
      if (b.hatched)
        s += fmt::format(
            "<rect x=\"{}\" y=\"{}\" width=\"{}\" height=\"18\" fill=\"url(#{})\" "
            "class=\"hatched\"/>\n",
            px(x), px(y), px(w), hatch);
      x += w;
    }
    s += fmt::format("<text x=\"{}\" y=\"{}\">{}</text>\n", px(x + 6), px(y + 13),
                     html_escape(b.parts.empty() ? "unknown" : b.value_text));
  }
  return s + "</svg>\n";
}

namespace {

// The plot area, then the x-axis label, then one legend line per series.
struct Frame {
  double left = 64, right = 24, top = 12, bottom = 44, width = 960, height = 280;
  double legend = 0;  // height of the legend below the plot
  double x0 = 0, x1 = 1, y0 = 0, y1 = 1;
  double x(double v) const { return left + (v - x0) / (x1 - x0) * (width - left - right); }
  double y(double v) const { return plot_bottom() - (v - y0) / (y1 - y0) * (plot_bottom() - top); }
  double plot_bottom() const { return height - legend - bottom; }
};

Frame frame_for(const std::vector<SvgSeries>& series, const SvgAxes& axes,
                const std::vector<SvgShade>& shades) {
  Frame f;
  double xl = INFINITY, xh = -INFINITY, yl = INFINITY, yh = -INFINITY;
  for (const SvgSeries& s : series)
    for (auto [x, y] : s.points)
      xl = std::min(xl, x), xh = std::max(xh, x), yl = std::min(yl, y), yh = std::max(yh, y);
  for (const SvgShade& sh : shades) xl = std::min(xl, sh.x0), xh = std::max(xh, sh.x1);
  if (!std::isfinite(xl)) xl = 0, xh = 1;
  if (!std::isfinite(yl)) yl = 0, yh = 1;
  if (axes.y_from_zero) yl = std::min(0.0, yl);
  if (axes.y_max > 0) yh = axes.y_max;
  if (!(xh > xl)) xh = xl + 1;
  if (!(yh > yl)) yh = yl + 1;
  const std::vector<double> yt = ticks(yl, yh);
  f.legend = 18.0 * double(series.size()) + 6;
  f.height += f.legend;
  // The top goes up to the next tick, so the highest point is inside the plot.
  if (axes.y_max <= 0 && yt.size() >= 2 && yt.back() < yh) yh = yt.back() + (yt[1] - yt[0]);
  f.x0 = xl, f.x1 = xh, f.y0 = yl, f.y1 = yh;
  return f;
}

std::string axes_svg(const Frame& f, const SvgAxes& axes) {
  std::string s;
  for (double v : ticks(f.y0, f.y1)) {
    s += fmt::format("<line x1=\"{}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" class=\"grid\"/>\n", px(f.left),
                     px(f.y(v)), px(f.width - f.right), px(f.y(v)));
    s += fmt::format("<text x=\"{}\" y=\"{}\" text-anchor=\"end\">{}</text>\n", px(f.left - 6),
                     px(f.y(v) + 4), tick_text(v));
  }
  for (double v : ticks(f.x0, f.x1)) {
    s += fmt::format("<line x1=\"{}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" class=\"axis\"/>\n", px(f.x(v)),
                     px(f.plot_bottom()), px(f.x(v)), px(f.plot_bottom() + 4));
    s += fmt::format("<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">{}</text>\n", px(f.x(v)),
                     px(f.plot_bottom() + 18), tick_text(v));
  }
  s += fmt::format(
      "<line x1=\"{0}\" y1=\"{1}\" x2=\"{2}\" y2=\"{1}\" class=\"axis\"/><line x1=\"{0}\" "
      "y1=\"{3}\" x2=\"{0}\" y2=\"{1}\" class=\"axis\"/>\n",
      px(f.left), px(f.plot_bottom()), px(f.width - f.right), px(f.top));
  s += fmt::format("<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">{}</text>\n",
                   px((f.left + f.width - f.right) / 2), px(f.plot_bottom() + 36),
                   html_escape(axes.x_label));
  s += fmt::format(
      "<text x=\"14\" y=\"{}\" transform=\"rotate(-90 14 {})\" text-anchor=\"middle\">{}"
      "</text>\n",
      px((f.top + f.plot_bottom()) / 2), px((f.top + f.plot_bottom()) / 2),
      html_escape(axes.y_label));
  return s;
}

// Bucket means down to at most `limit` points: a 40-minute run sampled at 10 Hz stays readable.
std::vector<std::pair<double, double>> thin(const std::vector<std::pair<double, double>>& pts,
                                            size_t limit) {
  if (pts.size() <= limit) return pts;
  std::vector<std::pair<double, double>> out;
  const size_t per = (pts.size() + limit - 1) / limit;
  for (size_t i = 0; i < pts.size(); i += per) {
    const size_t end = std::min(pts.size(), i + per);
    double sx = 0, sy = 0;
    for (size_t k = i; k < end; ++k) sx += pts[k].first, sy += pts[k].second;
    out.emplace_back(sx / double(end - i), sy / double(end - i));
  }
  return out;
}

}  // namespace

std::string svg_lines(const std::vector<SvgSeries>& series, const SvgAxes& axes,
                      const std::vector<SvgShade>& shades) {
  const Frame f = frame_for(series, axes, shades);
  std::string s = fmt::format(
      "<svg xmlns=\"http://www.w3.org/2000/svg\" class=\"chart\" width=\"{0}\" height=\"{1}\" "
      "viewBox=\"0 0 {0} {1}\">\n",
      px(f.width), px(f.height));
  for (const SvgShade& sh : shades) {
    s += fmt::format("<rect x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\" fill=\"{}\"/>\n",
                     px(f.x(sh.x0)), px(f.top), px(std::max(0.0, f.x(sh.x1) - f.x(sh.x0))),
                     px(f.plot_bottom() - f.top), phase_color(sh.label));
    s += fmt::format("<text x=\"{}\" y=\"{}\" class=\"phase\">{}</text>\n", px(f.x(sh.x0) + 3),
                     px(f.top + 12), html_escape(sh.label));
  }
  s += axes_svg(f, axes);
  for (size_t i = 0; i < series.size(); ++i) {
    const auto pts = thin(series[i].points, 1500);
    std::string list;
    for (auto [x, y] : pts) list += px(f.x(x)) + "," + px(f.y(y)) + " ";
    s += fmt::format("<polyline fill=\"none\" stroke=\"{}\" stroke-width=\"2\" points=\"{}\"/>\n",
                     color(i), list);
    if (pts.size() <= 40)
      for (auto [x, y] : pts)
        s += fmt::format("<circle cx=\"{}\" cy=\"{}\" r=\"3\" fill=\"{}\"/>\n", px(f.x(x)),
                         px(f.y(y)), color(i));
    const double ly = f.plot_bottom() + f.bottom + 14 + 18 * double(i);
    s += fmt::format(
        "<rect x=\"{}\" y=\"{}\" width=\"12\" height=\"12\" fill=\"{}\"/><text x=\"{}\" y=\"{}\">{}"
        "</text>\n",
        px(f.left), px(ly - 10), color(i), px(f.left + 16), px(ly), html_escape(series[i].name));
  }
  return s + "</svg>\n";
}

// ---------------------------------------------------------------------------------------------
// The page

namespace {

const char* kStyle = R"(
body { font-family: "DejaVu Sans", Helvetica, Arial, sans-serif; margin: 24px; color: #222;
       background: #fff; }
h1 { font-size: 22px; } h2 { font-size: 19px; margin-top: 32px; border-bottom: 1px solid #ccc; }
h3 { font-size: 15px; margin: 20px 0 6px; }
table { border-collapse: collapse; font-size: 12px; margin: 8px 0; }
th, td { border: 1px solid #ccc; padding: 3px 6px; }
td.num { white-space: nowrap; }
td.file { word-break: break-all; font-size: 11px; min-width: 120px; }
th { background: #f0f3f7; text-align: left; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
tr.total td { font-weight: bold; background: #fafafa; }
p.note, li.note { font-size: 12px; color: #555; margin: 2px 0; }
svg.chart { display: block; margin: 4px 0 12px; }
svg.chart text { font-size: 12px; fill: #222; }
svg.chart text.phase { font-size: 11px; fill: #666; }
svg.chart line.grid { stroke: #e4e4e4; } svg.chart line.axis { stroke: #888; }
)";

bool numeric_column(size_t i) {
  return i == 0 || i >= 4;
}

std::string table_html(const CompareTable& t) {
  std::string s = "<table class=\"compare\">\n<tr>";
  for (const std::string& h : compare_headers()) s += "<th>" + html_escape(h) + "</th>";
  s += "<th>file</th></tr>\n";
  for (size_t i = 0; i < t.rows.size(); ++i) {
    const std::vector<std::string> cells = compare_cells(t.rows[i], i);
    s += "<tr>";
    for (size_t k = 0; k < cells.size(); ++k)
      s += fmt::format("<td{}>{}</td>", numeric_column(k) ? " class=\"num\"" : "",
                       html_escape(cells[k]));
    s += "<td class=\"file\">" +
         html_escape(t.rows[i].file.empty() ? "published" : t.rows[i].file) + "</td></tr>\n";
  }
  return s + "</table>\n";
}

// The precision too: a suite's rows are often one device in several.
std::string row_name(const CompareEntry& e, size_t i) {
  return fmt::format("#{} {} {} ({})", i + 1, e.device, e.precision, e.label);
}

std::string bars_html(const CompareTable& t) {
  std::vector<SvgBar> time, speed;
  bool any_time = false, any_speed = false, any_hatched = false;
  for (size_t i = 0; i < t.rows.size(); ++i) {
    const CompareEntry& e = t.rows[i];
    SvgBar a{row_name(e, i), {}, "", e.projected},
        b{row_name(e, i), {}, "", e.images_per_s_derived};
    if (e.train_test_s)
      a.parts = {*e.train_test_s}, any_time = true,
      a.value_text = fmt::format("{:.2f} s{}", *e.train_test_s, e.projected ? " projected" : "");
    if (e.images_per_s)
      b.parts = {*e.images_per_s}, any_speed = true,
      b.value_text = fmt::format("{:.0f} images/s{}", *e.images_per_s,
                                 e.images_per_s_derived ? " derived" : "");
    any_hatched = any_hatched || a.hatched || b.hatched;
    time.push_back(a), speed.push_back(b);
  }
  std::string s;
  if (any_time)
    s += "<h3>Train + test time (seconds, shorter is better)</h3>\n" + svg_hbars(time, {});
  if (any_speed)
    s += "<h3>Training throughput, steady state (images/s, longer is better)</h3>\n" +
         svg_hbars(speed, {});
  if (any_hatched)
    s += "<p class=\"note\">Hatched: not measured whole. A projected time is the whole run's, "
         "from a partial run's steady rate; the seed article's images/s are derived from its "
         "published time.</p>\n";
  return s;
}

// A record's loss curve: per epoch where it has three or more, else its sampled losses (a run of
// a few steps still has a curve). x: epochs into the run where each mean's stretch ends.
SvgSeries loss_series(const json& r, const std::string& name) {
  SvgSeries epochs{name, {}}, samples{name, {}};
  const json* l = r.is_object() && r.contains("loss") ? &r["loss"] : nullptr;
  if (!l || !l->is_object()) return epochs;
  if (l->contains("epochs") && (*l)["epochs"].is_array())
    for (size_t k = 0; k < (*l)["epochs"].size(); ++k)
      if ((*l)["epochs"][k].is_number())
        epochs.points.emplace_back(double(k + 1), (*l)["epochs"][k].get<double>());
  if (l->contains("samples") && (*l)["samples"].is_array())
    for (const json& p : (*l)["samples"])
      if (p.is_array() && p.size() == 2 && p[0].is_number() && p[1].is_number())
        samples.points.emplace_back(p[0].get<double>(), p[1].get<double>());
  return epochs.points.size() < 3 && samples.points.size() >= 2 ? samples : epochs;
}

bool worth_drawing(const std::vector<SvgSeries>& series) {
  return std::any_of(series.begin(), series.end(),
                     [](const SvgSeries& s) { return s.points.size() >= 2; });
}

std::string loss_html(const CompareTable& t) {
  std::vector<SvgSeries> series;
  for (size_t i = 0; i < t.rows.size(); ++i) {
    SvgSeries s = loss_series(t.rows[i].record, row_name(t.rows[i], i));
    if (!s.points.empty()) series.push_back(std::move(s));
  }
  if (!worth_drawing(series)) return "";
  return "<h3>Training loss (per epoch; sampled within a run of fewer than three)</h3>\n" +
         svg_lines(series, SvgAxes{"epochs into the run", "mean training loss", true, 0});
}

// Consecutive samples of one phase become one shaded range; a sample covers the period that
// ends at its t.
std::vector<SvgShade> phase_shades(const json& timeline) {
  std::vector<SvgShade> out;
  double prev_t = 0;
  for (const json& s : timeline) {
    if (!s.is_object() || !s.contains("t") || !s["t"].is_number()) continue;
    const double t = s["t"].get<double>();
    const std::string phase =
        s.contains("phase") && s["phase"].is_string() ? s["phase"].get<std::string>() : "";
    if (!phase.empty()) {
      if (!out.empty() && out.back().label == phase)
        out.back().x1 = t;
      else
        out.push_back({prev_t, t, phase});
    }
    prev_t = t;
  }
  return out;
}

SvgSeries timeline_series(const json& timeline, const char* key, const std::string& name) {
  SvgSeries s{name, {}};
  for (const json& p : timeline)
    if (p.is_object() && p.contains("t") && p["t"].is_number() && p.contains(key) &&
        p[key].is_number())
      s.points.emplace_back(p["t"].get<double>(), p[key].get<double>());
  return s;
}

std::string timeline_html(const CompareEntry& e, size_t i) {
  if (!e.record.is_object()) return "";
  const json* tl = nullptr;
  if (e.record.contains("utilisation") && e.record["utilisation"].is_object() &&
      e.record["utilisation"].contains("timeline") &&
      e.record["utilisation"]["timeline"].is_array())
    tl = &e.record["utilisation"]["timeline"];
  std::vector<SvgSeries> series;
  for (auto [key, name] :
       {std::pair{"proc_cpu_pct", "process CPU %"}, std::pair{"cpu_busy_pct", "machine CPU %"},
        std::pair{"gpu_busy_pct", "GPU busy %"}}) {
    if (!tl) break;
    SvgSeries s = timeline_series(*tl, key, name);
    if (!s.points.empty()) series.push_back(std::move(s));
  }
  if (!worth_drawing(series))
    return fmt::format("<p class=\"note\">{}: no utilisation timeline</p>\n",
                       html_escape(row_name(e, i)));
  return fmt::format("<h3>Utilisation: {}</h3>\n", html_escape(row_name(e, i))) +
         svg_lines(series, SvgAxes{"seconds since start", "%", true, 100}, phase_shades(*tl));
}

std::string profile_html(const json& j) {
  const ProfileReport r = profile_from_json(j);
  std::string s = fmt::format(
      "<h3>Per-layer breakdown: {} {}, batch {}, step {:.4f} ms ({})</h3>\n", html_escape(r.device),
      html_escape(r.precision), r.batch, r.step_ms, html_escape(j.value("file", "")));
  const auto rows = profile_table(r);
  s += "<table class=\"profile\">\n";
  for (size_t i = 0; i < rows.size(); ++i) {
    const bool total = rows[i][0] == "step" || rows[i][0] == "layers";
    s += total ? "<tr class=\"total\">" : "<tr>";
    for (size_t k = 0; k < rows[i].size(); ++k) {
      const bool num = k >= 3 && k <= 13 && k != 12;
      if (i == 0)
        s += "<th>" + html_escape(rows[i][k]) + "</th>";
      else
        s += fmt::format("<td{}>{}</td>", num ? " class=\"num\"" : "", html_escape(rows[i][k]));
    }
    s += "</tr>\n";
  }
  s += "</table>\n";
  std::vector<SvgBar> bars;
  for (const LayerRow& l : r.layers)
    bars.push_back({l.name + " (" + l.op + ")",
                    {l.forward_ms, l.backward_ms, 0},
                    fmt::format("{:.4f} ms", l.total_ms())});
  for (const OtherRow& o : r.other)
    if (o.ms > 0) bars.push_back({o.key, {0, 0, o.ms}, fmt::format("{:.4f} ms", o.ms)});
  return s + svg_hbars(bars, {"forward", "backward", "rest of the step"});
}

std::string section_html(const CompareTable& t) {
  std::string s = fmt::format("<h2>{}</h2>\n", html_escape(t.workload));
  s += table_html(t);
  s += "<ul>\n";
  for (const std::string& n : t.notes) s += "<li class=\"note\">" + html_escape(n) + "</li>\n";
  s += "</ul>\n";
  s += bars_html(t);
  s += loss_html(t);
  for (size_t i = 0; i < t.rows.size(); ++i) s += timeline_html(t.rows[i], i);
  for (const json& p : t.profiles) s += profile_html(p);
  return s;
}

}  // namespace

std::string render_compare_html(const Comparison& c, const HtmlPage& page) {
  const std::string title = html_escape(page.title);
  std::string s = "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<title>" +
                  title + "</title>\n<style>" + std::string(kStyle) +
                  "</style>\n</head>\n<body>\n<h1>" + title + "</h1>\n";
  for (const std::string& p : page.intro) s += "<p>" + html_escape(p) + "</p>\n";
  s += "<p class=\"note\">Inputs: ";
  for (size_t i = 0; i < c.files.size(); ++i) s += (i ? ", " : "") + html_escape(c.files[i]);
  s += "</p>\n";
  for (const CompareTable& t : c.tables) s += section_html(t);
  s +=
      "<p class=\"note\">time / #1: train+test time over #1's. peak / #1: datasheet peak FLOP/s "
      "for "
      "the precision used, over #1's. delivered = (time of #1 / time) / (peak / peak of #1): the "
      "share of the peak advantage the software turned into speed (1 = all of it). MFU: steady "
      "training FLOP/s over the datasheet peak. CPU %: process CPU over usable CPUs while training "
      "(&quot;machine&quot;: the whole machine over the whole run, as PyTorch peers record "
      "it).</p>\n";
  return s + "</body>\n</html>\n";
}

}  // namespace tb
