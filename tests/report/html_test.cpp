// The HTML report: self-contained, escaped, and it renders: headless Chromium takes a screenshot
// (which must not be blank) and dumps the DOM (which must hold the key numbers as text).
#include "report/html.h"

#include <gtest/gtest.h>
#include <png.h>
#include <sys/wait.h>

#include <cstdio>
#include <memory>
#include <set>

#include "report/profile.h"
#include "report_test_util.h"

namespace tb {
namespace {

using nlohmann::json;
using testing::fake_record;
using testing::FakeRun;
using testing::ReportDir;

Comparison sample_comparison() {
  FakeRun a, b;
  a.train_test_s = 12.5, a.images_per_s = 48000, a.peak = 10e12;
  b.device = "GPU <B> & co", b.train_test_s = 5, b.images_per_s = 123456, b.peak = 40e12;
  json profile = {{"workload", "fashion-mlp"},
                  {"device", "GPU A"},
                  {"precision", "fp32"},
                  {"batch", 32},
                  {"step_ms", 0.75},
                  {"layers",
                   {{{"name", "fc1"},
                     {"op", "dense"},
                     {"shape", "128"},
                     {"forward_ms", 0.2},
                     {"backward_ms", 0.3},
                     {"flops_forward", 6422528.0},
                     {"flops_backward", 6422528.0},
                     {"bytes", 1e6},
                     {"bound", "memory"},
                     {"share", 0.6667}}}},
                  {"other", {{"optimizer", {{"ms", 0.25}, {"share", 0.3333}}}}}};
  CompareSettings s;
  s.with_seed = true;
  return compare_inputs({fake_record(a), fake_record(b), profile}, {"a.json", "b.json", "p.json"},
                        s);
}

// What `suite` renders: a whole fashion-mlp run and a 33-step ResNet-50 run (its loss sampled
// per step, its whole run projected), each against the seed article's rows.
std::string suite_page() {
  FakeRun mlp, resnet;
  mlp.device = resnet.device = "CPU X", mlp.kind = resnet.kind = "cpu";
  mlp.train_test_s = 12.5;
  resnet.workload = "resnet50-cifar10", resnet.batch = 128, resnet.steps = 33;
  resnet.train_test_s = 75;
  json r = fake_record(resnet);
  r["stopped_by_steps"] = true;
  r["loss"]["epochs"] = {2.2};
  json samples = json::array();
  for (int k = 1; k <= 33; ++k) samples.push_back({k / 391.0, 2.4 - 0.01 * k});
  r["loss"]["samples"] = samples;
  r["projected"] = {{"times_s", {{"train_test", 9876.5}}},
                    {"steps", 3910},
                    {"from",
                     {{"train_images", 4224},
                      {"of_train_images", 500000},
                      {"test_images", 1280},
                      {"of_test_images", 10000}}}};
  CompareSettings s;
  s.with_seed = true;
  Comparison c = compare_inputs({fake_record(mlp)}, {"mlp.json"}, s);
  Comparison rn = compare_inputs({r}, {"resnet.json"}, s);
  c.tables.push_back(rn.tables[0]);
  c.files = {"mlp.json", "resnet.json"};
  return render_compare_html(c, {"trainbench suite", {"CPU X (cpu), 2 threads."}});
}

TEST(Html, SuiteMarksProjectedAndDerived) {
  const std::string html = suite_page();
  EXPECT_NE(html.find("<h1>trainbench suite</h1>"), std::string::npos);
  EXPECT_NE(html.find("9876.50 projected"), std::string::npos);  // table and bar
  EXPECT_NE(html.find("1194 derived"), std::string::npos);       // 500,000 images / 418.73 s
  EXPECT_NE(html.find("<pattern id=\"hatch"), std::string::npos);
  EXPECT_NE(html.find("class=\"hatched\""), std::string::npos);
  // The 33-step run's loss is drawn from its samples: one chart, and one for fashion-mlp.
  size_t loss_charts = 0;
  for (size_t at = html.find("Training loss"); at != std::string::npos;
       at = html.find("Training loss", at + 1))
    ++loss_charts;
  EXPECT_EQ(loss_charts, 2u);
}

// A chart with nothing to say is left out: one loss value, no samples, no timeline.
TEST(Html, EmptyChartsLeftOut) {
  json r = fake_record(FakeRun{});
  r["loss"]["epochs"] = {0.5};
  r["utilisation"]["timeline"] = json::array();
  const std::string html = render_compare_html(compare_inputs({r}, {"r.json"}, {}));
  EXPECT_EQ(html.find("Training loss"), std::string::npos);
  EXPECT_NE(html.find("no utilisation timeline"), std::string::npos);
  EXPECT_NE(html.find("Train + test time"), std::string::npos);
  EXPECT_EQ(html.find("hatch"), std::string::npos);  // nothing projected or derived
}

TEST(Html, Escape) {
  EXPECT_EQ(html_escape("a<b>&\"c'"), "a&lt;b&gt;&amp;&quot;c&#39;");
  EXPECT_EQ(html_escape("plain 1.23"), "plain 1.23");
}

TEST(Html, SelfContainedAndEscaped) {
  const std::string html = render_compare_html(sample_comparison());
  EXPECT_EQ(html.rfind("<!DOCTYPE html>", 0), 0u);
  for (const char* banned : {"<script", "<link", "<img", "<iframe", "https:", "src=", "@import"})
    EXPECT_EQ(html.find(banned), std::string::npos) << banned;
  // The only URL is the SVG namespace name, which is never fetched.
  size_t urls = 0, svgs = 0;
  for (size_t at = html.find("http"); at != std::string::npos; at = html.find("http", at + 1))
    ++urls;
  for (size_t at = html.find("<svg"); at != std::string::npos; at = html.find("<svg", at + 1))
    ++svgs;
  EXPECT_EQ(urls, svgs);
  EXPECT_EQ(html.find("GPU <B>"), std::string::npos);
  EXPECT_NE(html.find("GPU &lt;B&gt; &amp; co"), std::string::npos);
  for (const char* s : {"12.50", "48000", "123456", "0.400x", "4.000x", "0.625", "7.78", "6.70",
                        "fc1", "polyline", "Per-layer breakdown"})
    EXPECT_NE(html.find(s), std::string::npos) << s;
}

TEST(Html, ChartsHandleEdgeCases) {
  EXPECT_NE(svg_hbars({}, {}).find("</svg>"), std::string::npos);
  const std::string unknown = svg_hbars({{"x", {}, ""}, {"y", {0}, "0 s"}}, {});
  EXPECT_NE(unknown.find("unknown"), std::string::npos);
  EXPECT_EQ(unknown.find("nan"), std::string::npos);
  const std::string one = svg_lines({{"loss", {{1, 0.5}}}}, {"epoch", "loss", true, 0});
  EXPECT_NE(one.find("<circle"), std::string::npos);
  EXPECT_EQ(one.find("nan"), std::string::npos);
  EXPECT_EQ(one.find("inf"), std::string::npos);
}

// Values too large for their spread to move them (1e16 and 1e16 + 2): the axis ticks are
// counted, so the chart is drawn instead of stepping in place until memory runs out.
TEST(Html, ChartsOfValuesBeyondTheirPrecisionEnd) {
  const std::string svg = svg_lines({{"t", {{1e16, 1}, {1e16 + 2, 2}}}}, {"s", "%", true, 100});
  EXPECT_NE(svg.find("</svg>"), std::string::npos);
  EXPECT_LT(svg.size(), 100000u);
}

// ---- Chromium ----

std::string find_chromium() {
  for (const char* dir : {"/usr/bin/", "/usr/local/bin/", "/snap/bin/"})
    for (const char* name : {"chromium", "chromium-browser", "google-chrome"}) {
      const std::string p = std::string(dir) + name;
      if (access(p.c_str(), X_OK) == 0) return p;
    }
  return "";
}

int run_shell(const std::string& cmd) {
  const int st = std::system(cmd.c_str());
  return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

std::string chromium_command(const std::string& chromium, const std::string& profile_dir) {
  return "timeout 60 " + chromium +
         " --headless --no-sandbox --disable-gpu --no-first-run --disable-background-networking"
         " --disable-component-update --disable-sync --disable-dev-shm-usage"
         " --user-data-dir=" +
         profile_dir;
}

// Number of distinct pixel colours in a PNG (0 when it cannot be read).
size_t distinct_colours(const std::string& path) {
  png_image img{};
  img.version = PNG_IMAGE_VERSION;
  if (!png_image_begin_read_from_file(&img, path.c_str())) return 0;
  img.format = PNG_FORMAT_RGBA;
  std::vector<png_byte> px(PNG_IMAGE_SIZE(img));
  if (!png_image_finish_read(&img, nullptr, px.data(), 0, nullptr)) return 0;
  std::set<uint32_t> colours;
  for (size_t i = 0; i + 3 < px.size() && colours.size() < 64; i += 4)
    colours.insert(uint32_t(px[i]) << 24 | uint32_t(px[i + 1]) << 16 | uint32_t(px[i + 2]) << 8 |
                   px[i + 3]);
  return colours.size();
}

// Screenshots the page (which must not be blank) and returns its DOM as Chromium read it ("" where
// Chromium failed).
std::string render_in_chromium(const std::string& chromium, const ReportDir& dir,
                               const std::string& name, const std::string& html) {
  const std::string page = dir.write(name + ".html", html);
  const std::string png = (dir.path / (name + ".png")).string();
  const std::string dom = (dir.path / (name + ".dom")).string();
  const std::string base = chromium_command(chromium, (dir.path / "profile").string());
  EXPECT_EQ(run_shell(base + " --screenshot=" + png + " --window-size=1200,1600 file://" + page +
                      " >/dev/null 2>&1"),
            0);
  EXPECT_GT(distinct_colours(png), 1u) << name << ": the screenshot is blank";
  if (run_shell(base + " --dump-dom file://" + page + " >" + dom + " 2>/dev/null") != 0) return "";
  return testing::read_file(dom);
}

// The compare report and the suite's.
TEST(Html, RendersInHeadlessChromium) {
  const std::string chromium = find_chromium();
  if (chromium.empty())
    GTEST_SKIP() << "chromium is not installed (apt-get install chromium); the HTML report is "
                    "not rendered";
  ReportDir dir;
  std::string text =
      render_in_chromium(chromium, dir, "compare", render_compare_html(sample_comparison()));
  for (const char* s : {"12.50", "5.00", "48000", "123456", "0.400x", "4.000x", "0.625", "7.78",
                        "6.70", "fc1", "GPU &lt;B&gt; &amp; co", "<svg"})
    EXPECT_NE(text.find(s), std::string::npos) << s;
  text = render_in_chromium(chromium, dir, "suite", suite_page());
  for (const char* s : {"trainbench suite", "9876.50 projected", "1194 derived", "418.73",
                        "2286.16", "projected to the whole run", "url(#hatch", "<svg"})
    EXPECT_NE(text.find(s), std::string::npos) << s;
  // The check itself: an empty page gives one colour.
  const std::string blank = dir.write("blank.html", "<!DOCTYPE html><html><body></body></html>");
  const std::string blank_png = (dir.path / "blank.png").string();
  ASSERT_EQ(run_shell(chromium_command(chromium, (dir.path / "profile").string()) +
                      " --screenshot=" + blank_png + " --window-size=400,300 file://" + blank +
                      " >/dev/null 2>&1"),
            0);
  EXPECT_EQ(distinct_colours(blank_png), 1u);
}

}  // namespace
}  // namespace tb
