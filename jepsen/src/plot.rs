//! The latency plot, `latency.svg` in the output dir: every completed operation's latency against
//! the time it was invoked, over the fault windows, so a reader sees at a glance what each fault
//! did to the clients (Jepsen's `latency-raw` plot).
//!
//! What it shows:
//! * x: seconds since the test started (the history's clock), at the operation's invocation;
//!   y: its latency (completion minus invocation) in ms, on a log scale.
//! * One marker per completed operation, coloured by outcome: `ok`, `fail` (certainly did not
//!   happen) and `info` (unknown; usually a client timeout, so it sits at the client's deadline
//!   near the top). A circle is a read, a triangle a write of any kind (write, compare-and-set,
//!   ...). Operations that never completed have no latency and are only counted in the legend.
//! * Each fault window as a translucent band over the full height, one colour per nemesis kind;
//!   a window with no end lasts to the right edge. The final phase (every node killed and
//!   restarted, then every key read) is a grey band from the workload's last event to the right
//!   edge: the runner records no marker for it, so it is recognised in the history by its reads'
//!   processes ([`is_final_process`]), and the restart before them is the empty stretch at the
//!   band's start.
//! * A legend in a panel right of the chart, with counts.
//!
//! Owns only drawing: it reads the history and the windows and judges nothing (the figures are
//! [`crate::report`]'s, the verdict the checkers'). The output depends only on the inputs.
//! Built on plotters' SVG backend with no font support: text is written as SVG `<text>` naming a
//! font family for the viewer to render, and laid out with plotters' estimate of its width.

use std::path::Path;

use anyhow::{anyhow, Context, Result};
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::checker::durability::is_final_process;
use crate::history::{Event, EventKind, Op};
use crate::nemesis::{FaultWindow, NemesisKind};
use crate::report::pair;

/// The whole image, in pixels.
const SIZE: (u32, u32) = (1280, 640);
/// Width of the legend panel right of the chart.
const LEGEND_WIDTH: u32 = 260;
/// Latencies below this are drawn at it: a log axis has no zero.
const MIN_LATENCY_MS: f64 = 0.001;
/// Opacity of the bands (fault windows, final phase).
const BAND_OPACITY: f64 = 0.18;
/// Opacity of the markers: dense clusters stay readable.
const MARKER_OPACITY: f64 = 0.7;
const FONT: &str = "sans-serif";

const OK: RGBColor = RGBColor(27, 158, 119);
const FAIL: RGBColor = RGBColor(217, 95, 2);
const INFO: RGBColor = RGBColor(40, 40, 40);
/// The markers' shapes in the legend.
const SHAPE: RGBColor = RGBColor(120, 120, 120);
const FINAL_PHASE: RGBColor = RGBColor(110, 110, 110);

/// The band colour of a nemesis kind.
fn band_color(kind: NemesisKind) -> RGBColor {
    // By name, with a fallback, so a kind added to the nemesis draws (in grey) before it is
    // given a colour here.
    match kind.name() {
        "partition" => RGBColor(66, 133, 244),
        "kill" => RGBColor(220, 20, 60),
        "pause" => RGBColor(240, 180, 0),
        "crash-points" => RGBColor(150, 60, 200),
        "clock" => RGBColor(0, 170, 200),
        "membership" => RGBColor(140, 90, 50),
        _ => RGBColor(150, 150, 150),
    }
}

fn outcome_color(outcome: EventKind) -> RGBColor {
    match outcome {
        EventKind::Fail => FAIL,
        EventKind::Info => INFO,
        EventKind::Ok | EventKind::Invoke => OK,
    }
}

/// Writes the latency plot of `history` under the fault `windows` to `path` as SVG. Errors if
/// the file cannot be written or plotters fails (a panic inside plotters included), never
/// because of what the history holds.
pub fn write_latency_svg(path: &Path, history: &[Event], windows: &[FaultWindow], title: &str) -> Result<()> {
    let svg = std::panic::catch_unwind(|| render_latency_svg(history, windows, title))
        .map_err(|_| anyhow!("plotters panicked while drawing"))??;
    std::fs::write(path, svg).with_context(|| format!("write {}", path.display()))
}

/// The latency plot as an SVG document (see the module doc for what it shows).
pub fn render_latency_svg(history: &[Event], windows: &[FaultWindow], title: &str) -> Result<String> {
    let plot = Plot::of(history, windows, title);
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, SIZE).into_drawing_area();
        plot.draw(&root).context("draw the latency plot")?;
        root.present().context("finish the latency plot")?;
    }
    Ok(svg)
}

/// One completed operation, as plotted.
struct Point {
    at_s: f64,
    latency_ms: f64,
    outcome: EventKind,
    read: bool,
}

/// A band over the chart's full height.
struct Band {
    /// Written down its left edge: what the fault was (`partition isolate-one [2] | [1,3]`).
    label: String,
    color: RGBColor,
    from_s: f64,
    /// `None`: to the right edge.
    to_s: Option<f64>,
}

/// One line of the legend.
struct Entry {
    swatch: Swatch,
    text: String,
}

enum Swatch {
    Band(RGBColor),
    Circle(RGBColor),
    Triangle(RGBColor),
    /// A heading or a remark.
    None,
    /// The previous entry's text, continued.
    Continued,
}

/// Everything drawn, computed from the inputs first.
struct Plot<'a> {
    title: &'a str,
    points: Vec<Point>,
    bands: Vec<Band>,
    legend: Vec<Entry>,
    x_end: f64,
    y_range: (f64, f64),
}

fn secs(ns: u64) -> f64 {
    ns as f64 / 1e9
}

impl<'a> Plot<'a> {
    fn of(history: &[Event], windows: &[FaultWindow], title: &'a str) -> Plot<'a> {
        let ops = pair(history);
        let never_completed = ops.iter().filter(|p| p.outcome.is_none()).count();
        let points: Vec<Point> = ops
            .iter()
            .filter_map(|p| {
                let (outcome, done_ns) = p.outcome?;
                Some(Point {
                    at_s: secs(p.invoke_ns),
                    latency_ms: (done_ns.saturating_sub(p.invoke_ns) as f64 / 1e6).max(MIN_LATENCY_MS),
                    outcome,
                    read: matches!(p.op, Op::Read { .. }),
                })
            })
            .collect();

        let mut bands: Vec<Band> = windows
            .iter()
            .map(|w| Band {
                label: w.fault.clone(),
                color: band_color(w.nemesis),
                from_s: secs(w.start_ns),
                to_s: w.end_ns.map(secs),
            })
            .collect();
        // The history is in time order: the final phase began after the event before its first.
        let first_final = history.iter().position(|e| is_final_process(e.process));
        let final_from = first_final.map(|i| history[i.saturating_sub(1)].time_ns);
        if let Some(from_ns) = final_from {
            bands.push(Band { label: "final phase".into(), color: FINAL_PHASE, from_s: secs(from_ns), to_s: None });
        }

        let last_ns = history.iter().map(|e| e.time_ns).max().unwrap_or(0);
        let window_ns = windows.iter().flat_map(|w| [Some(w.start_ns), w.end_ns]).flatten().max().unwrap_or(0);
        let x_end = secs(last_ns.max(window_ns)).max(1.0);

        // From the power of ten at or below the fastest operation to a little above the slowest.
        let y_range = match points.iter().map(|p| p.latency_ms).reduce(f64::min) {
            None => (1.0, 1000.0),
            Some(min) => {
                let max = points.iter().map(|p| p.latency_ms).fold(min, f64::max);
                let lo = 10f64.powf(min.log10().floor());
                (lo, (max * 1.5).max(lo * 10.0))
            }
        };

        let mut legend = vec![Entry { swatch: Swatch::None, text: "operations (by invocation)".into() }];
        for (outcome, name) in [(EventKind::Ok, "ok"), (EventKind::Fail, "fail"), (EventKind::Info, "info: unknown")] {
            let n = points.iter().filter(|p| p.outcome == outcome).count();
            legend.push(Entry { swatch: Swatch::Circle(outcome_color(outcome)), text: format!("{name} ({n})") });
        }
        legend.push(Entry { swatch: Swatch::Circle(SHAPE), text: "read".into() });
        legend.push(Entry { swatch: Swatch::Triangle(SHAPE), text: "write of any kind".into() });
        if never_completed > 0 {
            legend.push(Entry { swatch: Swatch::None, text: format!("{never_completed} never completed (not drawn)") });
        }
        if !windows.is_empty() || final_from.is_some() {
            legend.push(Entry { swatch: Swatch::None, text: String::new() });
            legend.push(Entry { swatch: Swatch::None, text: "faults in force".into() });
        }
        let mut kinds: Vec<NemesisKind> = Vec::new();
        for w in windows {
            if !kinds.contains(&w.nemesis) {
                kinds.push(w.nemesis);
            }
        }
        for kind in kinds {
            let n = windows.iter().filter(|w| w.nemesis == kind).count();
            let text = format!("{} ({n} window{})", kind.name(), if n == 1 { "" } else { "s" });
            legend.push(Entry { swatch: Swatch::Band(band_color(kind)), text });
        }
        if final_from.is_some() {
            legend.push(Entry { swatch: Swatch::Band(FINAL_PHASE), text: "final phase: every node".into() });
            legend.push(Entry { swatch: Swatch::Continued, text: "restarted, every key read".into() });
        }

        Plot { title, points, bands, legend, x_end, y_range }
    }

    fn draw<DB: DrawingBackend>(
        &self,
        root: &DrawingArea<DB, Shift>,
    ) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
        root.fill(&WHITE)?;
        let body = root.titled(self.title, (FONT, 20))?;
        let (chart_area, legend_area) = body.split_horizontally(SIZE.0 - LEGEND_WIDTH);

        let (y_lo, y_hi) = self.y_range;
        let mut chart = ChartBuilder::on(&chart_area)
            .margin(10)
            .x_label_area_size(45)
            .y_label_area_size(70)
            .build_cartesian_2d(0f64..self.x_end, (y_lo..y_hi).log_scale())?;
        let x_digits: usize = if self.x_end < 5.0 { 1 } else { 0 };
        chart
            .configure_mesh()
            .x_desc("seconds since the test started")
            .y_desc("latency, ms (log scale)")
            .x_label_formatter(&|s| format!("{s:.x_digits$}"))
            .y_label_formatter(&|ms| ms_label(*ms))
            .axis_desc_style((FONT, 15))
            .label_style((FONT, 12))
            .light_line_style(BLACK.mix(0.04))
            .bold_line_style(BLACK.mix(0.12))
            .draw()?;

        chart.draw_series(self.bands.iter().map(|b| {
            let to = b.to_s.unwrap_or(self.x_end).min(self.x_end);
            Rectangle::new([(b.from_s, y_lo), (to, y_hi)], b.color.mix(BAND_OPACITY).filled())
        }))?;
        // Turned a quarter, so a label fits a band of any width; it starts at the band's top.
        let grey = BLACK.mix(0.6);
        let band_text = TextStyle::from((FONT, 12).into_font().transform(FontTransform::Rotate90))
            .color(&grey)
            .pos(Pos::new(HPos::Left, VPos::Bottom));
        chart.draw_series(
            self.bands
                .iter()
                .map(|b| EmptyElement::at((b.from_s, y_hi)) + Text::new(b.label.clone(), (3, 6), band_text.clone())),
        )?;

        // Unknown outcomes last, on top: they are the rarest and the most interesting.
        for outcome in [EventKind::Ok, EventKind::Fail, EventKind::Info] {
            let style = outcome_color(outcome).mix(MARKER_OPACITY).filled();
            let of = |read: bool| {
                self.points
                    .iter()
                    .filter(move |p| p.outcome == outcome && p.read == read)
                    .map(|p| (p.at_s, p.latency_ms.min(y_hi)))
            };
            chart.draw_series(of(true).map(|at| Circle::new(at, 2, style)))?;
            chart.draw_series(of(false).map(|at| TriangleMarker::new(at, 3, style)))?;
        }

        let text = TextStyle::from((FONT, 14).into_font()).pos(Pos::new(HPos::Left, VPos::Center));
        for (i, entry) in self.legend.iter().enumerate() {
            let y = 30 + 22 * i as i32;
            match entry.swatch {
                Swatch::Band(color) => {
                    legend_area.draw(&Rectangle::new([(10, y - 7), (30, y + 7)], color.mix(BAND_OPACITY).filled()))?
                }
                Swatch::Circle(color) => legend_area.draw(&Circle::new((20, y), 4, color.filled()))?,
                Swatch::Triangle(color) => legend_area.draw(&TriangleMarker::new((20, y), 5, color.filled()))?,
                Swatch::None | Swatch::Continued => {}
            }
            let x = if matches!(entry.swatch, Swatch::None) { 10 } else { 38 };
            if !entry.text.is_empty() {
                legend_area.draw(&Text::new(entry.text.as_str(), (x, y), text.clone()))?;
            }
        }
        Ok(())
    }
}

/// A log axis label: `1000`, `10`, `1`, `0.1`, `0.001` (the key points come as powers of ten
/// with rounding noise).
fn ms_label(ms: f64) -> String {
    if ms >= 1.0 {
        format!("{ms:.0}")
    } else {
        let s = format!("{ms:.3}");
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checker::durability::FINAL_PROCESS_BASE;
    use crate::history::ReadLevel;

    fn ev(ms: u64, process: u64, kind: EventKind, op: Op) -> Event {
        Event { index: 0, time_ns: ms * 1_000_000, process, kind, op, error: None }
    }

    fn read() -> Op {
        Op::Read { key: "k".into(), level: ReadLevel::Linearizable, value: None, after: None }
    }

    fn write(v: &str) -> Op {
        Op::Write { key: "k".into(), value: v.into() }
    }

    fn window(nemesis: NemesisKind, start_ms: u64, end_ms: Option<u64>) -> FaultWindow {
        FaultWindow::plain(
            nemesis,
            &format!("{nemesis} [1]"),
            vec![1],
            start_ms * 1_000_000,
            end_ms.map(|ms| ms * 1_000_000),
        )
    }

    /// Every element `<name .../>` of the document, as its text.
    fn elements<'a>(svg: &'a str, name: &str) -> Vec<&'a str> {
        let open = format!("<{name} ");
        svg.match_indices(&open).map(|(at, _)| &svg[at..at + svg[at..].find('>').unwrap() + 1]).collect()
    }

    fn attr(element: &str, name: &str) -> f64 {
        let key = format!(" {name}=\"");
        let from = element.find(&key).unwrap_or_else(|| panic!("no {name} in {element}")) + key.len();
        let len = element[from..].find('"').unwrap();
        element[from..from + len].parse().unwrap_or_else(|e| panic!("{name} in {element}: {e}"))
    }

    fn fill_of(color: RGBColor) -> String {
        format!("fill=\"#{:02X}{:02X}{:02X}\"", color.0, color.1, color.2)
    }

    /// Whether every tag is closed, in order (the SVG is well formed, as far as tags go).
    fn tags_balance(svg: &str) -> bool {
        let mut open: Vec<&str> = Vec::new();
        for part in svg.split('<').skip(1) {
            let tag = &part[..part.find('>').expect("unterminated tag")];
            if tag.starts_with('?') || tag.starts_with('!') || tag.ends_with('/') {
                continue;
            }
            if let Some(name) = tag.strip_prefix('/') {
                if open.pop() != Some(name.trim()) {
                    return false;
                }
            } else {
                open.push(tag.split_whitespace().next().unwrap());
            }
        }
        open.is_empty()
    }

    #[test]
    fn plot_has_a_marker_per_completed_operation_and_a_band_per_window() {
        let cas = Op::Cas { key: "k".into(), from: None, to: "c".into() };
        let history = vec![
            ev(0, 1, EventKind::Invoke, read()),
            ev(2, 1, EventKind::Ok, read()),
            ev(100, 2, EventKind::Invoke, write("a")),
            ev(105, 2, EventKind::Ok, write("a")),
            ev(1200, 1, EventKind::Invoke, read()),
            ev(1201, 1, EventKind::Ok, read()),
            ev(1300, 2, EventKind::Invoke, write("b")),
            ev(2300, 2, EventKind::Info, write("b")), // timed out in the partition, at 1 s
            ev(2400, 3, EventKind::Invoke, cas.clone()),
            ev(2420, 3, EventKind::Fail, cas),
            ev(2500, 4, EventKind::Invoke, write("d")), // never completes
            ev(4000, FINAL_PROCESS_BASE, EventKind::Invoke, read()),
            ev(4003, FINAL_PROCESS_BASE, EventKind::Ok, read()),
        ];
        let windows = vec![window(NemesisKind::Partition, 1000, Some(2000)), window(NemesisKind::Kill, 2100, None)];
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("latency.svg");
        write_latency_svg(&path, &history, &windows, "register under [partition,kill] & friends").unwrap();
        let svg = std::fs::read_to_string(&path).unwrap();

        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"), "{svg}");
        assert!(tags_balance(&svg), "{svg}");
        for text in [
            "register under [partition,kill] &amp; friends",
            "seconds since the test started",
            "latency, ms (log scale)",
            "ok (4)",
            "fail (1)",
            "info: unknown (1)",
            "1 never completed",
            "partition (1 window)",
            "kill (1 window)",
            "final phase",
            "partition [1]", // each band's own label: its `fault`
            "kill [1]",
            "rotate(90,",
        ] {
            assert!(svg.contains(text), "{text:?} missing from:\n{svg}");
        }

        // One band per window (and a swatch each in the legend), over the chart's full height;
        // the kill window has no end, so it reaches the right edge, as the final phase does (from
        // the workload's last event, at 2.5 s).
        let rects = elements(&svg, "rect");
        let band = |color: RGBColor| -> Vec<&str> {
            rects.iter().copied().filter(|r| r.contains(&fill_of(color)) && attr(r, "width") > 25.0).collect()
        };
        let (partition, kill, last) =
            (band(band_color(NemesisKind::Partition)), band(band_color(NemesisKind::Kill)), band(FINAL_PHASE));
        assert_eq!((partition.len(), kill.len(), last.len()), (1, 1, 1), "{rects:#?}");
        for color in [band_color(NemesisKind::Partition), band_color(NemesisKind::Kill), FINAL_PHASE] {
            assert_eq!(rects.iter().filter(|r| r.contains(&fill_of(color))).count(), 2, "band + swatch");
        }
        let (p, k, f) = (partition[0], kill[0], last[0]);
        assert_eq!(attr(p, "height"), attr(k, "height"));
        assert_eq!(attr(p, "y"), attr(k, "y"));
        assert!(attr(p, "height") > 400.0, "{p}");
        assert!(attr(p, "x") < attr(k, "x") && attr(k, "x") < attr(f, "x"), "{p} {k} {f}");
        assert_eq!(attr(k, "x") + attr(k, "width"), attr(f, "x") + attr(f, "width"));

        // One marker per completed operation: circles are reads, triangles writes and cas (the
        // legend adds one circle per outcome and one of each shape in grey).
        let circles = elements(&svg, "circle");
        let triangles = elements(&svg, "polygon");
        let count = |of: &[&str], color: RGBColor| of.iter().filter(|e| e.contains(&fill_of(color))).count();
        assert_eq!(count(&circles, OK), 3 + 1, "ok reads, incl. the final read");
        assert_eq!(count(&triangles, OK), 1);
        assert_eq!(count(&triangles, INFO), 1);
        assert_eq!(count(&triangles, FAIL), 1);
        assert_eq!((circles.len(), triangles.len()), (3 + 3 + 1, 3 + 1));

        // The unknown write is drawn at its 1 s latency, above every ok operation.
        let info = triangles.iter().find(|t| t.contains(&fill_of(INFO))).unwrap();
        let points = &info[info.find("points=\"").unwrap() + 8..];
        let top: Vec<f64> = points.split([',', ' ']).take(2).map(|v| v.parse().unwrap()).collect();
        let info_y = top[1];
        assert!(info_y < 100.0, "{info}: near the top");
        for c in circles.iter().filter(|c| c.contains(&fill_of(OK)) && attr(c, "r") == 2.0) {
            assert!(attr(c, "cy") > info_y + 100.0, "{c} vs {info}");
        }
    }

    #[test]
    fn an_empty_history_still_draws_axes() {
        let svg = render_latency_svg(&[], &[], "nothing ran").unwrap();
        assert!(tags_balance(&svg));
        assert!(svg.contains("nothing ran") && svg.contains("seconds since the test started"), "{svg}");
        assert_eq!(elements(&svg, "polygon").len(), 1, "the legend's triangle only");
    }

    #[test]
    fn an_unwritable_path_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("no-such-dir").join("latency.svg");
        let err = write_latency_svg(&path, &[], &[], "t").unwrap_err();
        assert!(format!("{err:#}").contains("no-such-dir"), "{err:#}");
    }

    #[test]
    fn log_axis_labels_are_plain() {
        let labels: Vec<String> = [1000.0, 10.000000000000002, 1.0, 0.09999999999999999, 0.001].map(ms_label).into();
        assert_eq!(labels, ["1000", "10", "1", "0.1", "0.001"]);
    }
}
