//! The SVG charts, drawn with plotters: requests/s by server and workload (nginx marked), p99
//! against offered load per mix, and each worker's share of the requests under the fairness workload.

use std::path::Path;

use plotters::prelude::*;
use serde_json::Value;

use crate::results::{best_nginx, runs};

const LAB: RGBColor = RGBColor(31, 119, 180);
const NGINX: RGBColor = RGBColor(255, 127, 14);
const INVALID: RGBColor = RGBColor(214, 39, 40);
const PALETTE: [RGBColor; 8] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(23, 190, 207),
];

pub fn write_all(doc: &Value, out: &Path) -> Result<(), String> {
    throughput(doc, &out.join("throughput.svg")).map_err(|e| format!("throughput.svg: {e}"))?;
    for mix in doc["settings"]["mixes"].as_array().into_iter().flatten() {
        let name = mix["name"].as_str().unwrap_or("mix");
        if runs(doc, &format!("sweep-{name}")).next().is_some() {
            let path = out.join(format!("latency-{name}.svg"));
            latency(doc, name, &path).map_err(|e| format!("{}: {e}", path.display()))?;
        }
    }
    if runs(doc, "fairness").next().is_some() {
        fairness(doc, &out.join("fairness.svg")).map_err(|e| format!("fairness.svg: {e}"))?;
    }
    if runs(doc, "arrival-order").next().is_some() {
        dispatch(doc, &out.join("dispatch.svg")).map_err(|e| format!("dispatch.svg: {e}"))?;
    }
    Ok(())
}

pub type Drawn = Result<(), Box<dyn std::error::Error>>;

/// The series' legend as every chart here draws it: a framed box at `position`.
pub fn legend<'a, DB: DrawingBackend + 'a, CT: CoordTranslate>(
    chart: &mut ChartContext<'a, DB, CT>,
    position: SeriesLabelPosition,
) -> Drawn
where
    DB::ErrorType: 'static,
{
    chart
        .configure_series_labels()
        .position(position)
        .label_font(("sans-serif", 13))
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    Ok(())
}

/// Three panels, one per closed-loop workload: a horizontal bar per server, nginx's in orange and a
/// red one where the run was invalid, and a line at the best nginx.
fn throughput(doc: &Value, path: &Path) -> Drawn {
    let workloads = ["keep-alive", "pipelined", "churn"];
    let rows = workloads.iter().map(|w| runs(doc, w).count()).max().unwrap_or(0);
    if rows == 0 {
        return Ok(());
    }
    let height = 120 + workloads.len() as u32 * (60 + 22 * rows as u32);
    let root = SVGBackend::new(path, (900, height)).into_drawing_area();
    root.fill(&WHITE)?;
    let (title, body) = root.split_vertically(40);
    title.titled(
        "Requests per second by server and workload (median of rounds; orange: nginx)",
        ("sans-serif", 18),
    )?;
    for (panel, workload) in body.split_evenly((workloads.len(), 1)).iter().zip(workloads) {
        let bars: Vec<(String, f64, bool, bool)> = runs(doc, workload)
            .map(|r| {
                (
                    r["server"].as_str().unwrap_or("?").to_string(),
                    r["rps"]["median"].as_f64().unwrap_or(0.0),
                    r["family"] == "real-nginx",
                    r["valid"] == true,
                )
            })
            .collect();
        let max = bars.iter().map(|b| b.1).fold(1.0, f64::max) * 1.45;
        let n = bars.len() as i32;
        let mut chart = ChartBuilder::on(panel)
            .caption(workload, ("sans-serif", 16))
            .margin(8)
            .x_label_area_size(30)
            .y_label_area_size(170)
            .build_cartesian_2d(0.0..max, (0..n).into_segmented())?;
        let names: Vec<String> = bars.iter().map(|b| b.0.clone()).collect();
        chart
            .configure_mesh()
            .label_style(("sans-serif", 13))
            .disable_y_mesh()
            .y_labels(bars.len())
            .y_label_formatter(&|v| match v {
                SegmentValue::CenterOf(i) => names.get(*i as usize).cloned().unwrap_or_default(),
                _ => String::new(),
            })
            .x_label_formatter(&|v| rate_label(*v, max))
            .x_desc("requests/s")
            .draw()?;
        chart.draw_series(bars.iter().enumerate().map(|(i, (_, rps, nginx, valid))| {
            let color = if !valid {
                INVALID
            } else if *nginx {
                NGINX
            } else {
                LAB
            };
            let i = i as i32;
            let mut bar = Rectangle::new(
                [(0.0, SegmentValue::Exact(i)), (*rps, SegmentValue::Exact(i + 1))],
                color.filled(),
            );
            bar.set_margin(3, 3, 0, 0);
            bar
        }))?;
        if let Some((id, best)) = best_nginx(doc, workload) {
            chart
                .draw_series(LineSeries::new(
                    [(best, SegmentValue::Exact(0)), (best, SegmentValue::Exact(n))],
                    NGINX.stroke_width(2),
                ))?
                .label(format!("best nginx: {id}"))
                .legend(|(x, y)| PathElement::new([(x, y), (x + 16, y)], NGINX.stroke_width(2)));
            legend(&mut chart, SeriesLabelPosition::MiddleRight)?;
        }
    }
    root.present()?;
    Ok(())
}

/// A requests/s axis label: `1.5k`, `250k`, `12M`, with the precision the axis range needs.
fn rate_label(value: f64, max: f64) -> String {
    match max {
        m if m >= 2e6 => format!("{:.0}M", value / 1e6),
        m if m >= 20_000.0 => format!("{:.0}k", value / 1000.0),
        _ => format!("{:.1}k", value / 1000.0),
    }
}

/// p99 (log scale) against offered load, one line per server.
fn latency(doc: &Value, mix: &str, path: &Path) -> Drawn {
    let workload = format!("sweep-{mix}");
    // Per server: its name, its measured (load %, p99 ms) points, and its model's.
    type Curves = (String, Vec<(f64, f64)>, Vec<(f64, f64)>);
    let lines: Vec<Curves> = runs(doc, &workload)
        .map(|r| {
            let points = r["points"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|p| Some((p["load"].as_f64()? * 100.0, p["p99_us"].as_f64()? / 1000.0)))
                .filter(|(_, ms)| ms.is_finite() && *ms > 0.0)
                .collect();
            (r["server"].as_str().unwrap_or("?").to_string(), points, crate::model_curves::chart_points(r))
        })
        .collect();
    let all = lines.iter().flat_map(|(_, points, model)| points.iter().chain(model).map(|p| p.1));
    let (low, high) = all.fold((f64::MAX, f64::MIN), |(lo, hi), v| (lo.min(v), hi.max(v)));
    let (low, high) = if low <= high { (low / 1.5, high * 1.5) } else { (0.01, 10.0) };
    let about = doc["settings"]["mixes"]
        .as_array()
        .and_then(|mixes| mixes.iter().find(|m| m["name"] == mix))
        .and_then(|m| m["mix"].as_str())
        .unwrap_or(mix)
        .to_string();
    let root = SVGBackend::new(path, (900, 560)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!("p99 against offered load, {mix} mix ({about}); dashed: the model"),
            ("sans-serif", 17),
        )
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(0.0..100.0, (low..high).log_scale())?;
    chart
        .configure_mesh()
        .label_style(("sans-serif", 13))
        .x_desc("offered load, % of the server's own closed-loop capacity")
        .y_desc("p99 latency (ms, log)")
        .y_label_formatter(&|v| if *v >= 1.0 { format!("{v:.0}") } else { format!("{v:.2}") })
        .draw()?;
    for (i, (server, points, model)) in lines.iter().enumerate() {
        let color = PALETTE[i % PALETTE.len()];
        chart
            .draw_series(LineSeries::new(points.iter().copied(), color.stroke_width(2)))?
            .label(server.clone())
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 16, y)], color.stroke_width(2)));
        chart.draw_series(points.iter().map(|&p| Circle::new(p, 3, color.filled())))?;
        // The model of the queue this server approximates, dashed in the same colour.
        chart.draw_series(DashedLineSeries::new(model.iter().copied(), 6, 4, color.stroke_width(1)))?;
    }
    legend(&mut chart, SeriesLabelPosition::UpperLeft)?;
    root.present()?;
    Ok(())
}

/// Per server, one bar per executing worker: its share of the requests, in percent.
fn fairness(doc: &Value, path: &Path) -> Drawn {
    let groups: Vec<(String, f64, Vec<f64>)> = runs(doc, "fairness")
        .map(|r| {
            let requests: Vec<f64> = r["workers_detail"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|w| w["executes"] == true)
                .filter_map(|w| w["requests"].as_f64())
                .collect();
            let total: f64 = requests.iter().sum::<f64>().max(1.0);
            let shares = requests.iter().map(|r| r / total * 100.0).collect();
            (
                r["server"].as_str().unwrap_or("?").to_string(),
                r["jain_requests"].as_f64().unwrap_or(f64::NAN),
                shares,
            )
        })
        .collect();
    let width = (170 * groups.len() as u32).max(600);
    let root = SVGBackend::new(path, (width, 520)).into_drawing_area();
    root.fill(&WHITE)?;
    let n = groups.len().max(1) as f64;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "Fairness: each worker's share of the requests (N heavy + N light long-lived connections)",
            ("sans-serif", 17),
        )
        .margin(12)
        .x_label_area_size(20)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..n, 0.0..115.0)?;
    chart
        .configure_mesh()
        .label_style(("sans-serif", 13))
        .disable_x_mesh()
        .x_labels(0)
        .y_desc("share of the requests (%)")
        .draw()?;
    for (g, (server, jain, shares)) in groups.iter().enumerate() {
        let g = g as f64;
        let width = 0.8 / shares.len().max(1) as f64;
        chart.draw_series(shares.iter().enumerate().map(|(w, share)| {
            let x = g + 0.1 + w as f64 * width;
            Rectangle::new([(x, 0.0), (x + width * 0.9, *share)], PALETTE[w % PALETTE.len()].filled())
        }))?;
        chart.draw_series([
            Text::new(server.clone(), (g + 0.05, 112.0), ("sans-serif", 14)),
            Text::new(format!("Jain {jain:.2}"), (g + 0.05, 106.0), ("sans-serif", 13)),
        ])?;
    }
    root.present()?;
    Ok(())
}

/// dispatch.svg: per case, the heavy requests completed in the window, against the ideal (one
/// heavy connection per worker) and round-robin.
fn dispatch(doc: &Value, path: &Path) -> Drawn {
    let records: Vec<&Value> = runs(doc, "arrival-order").collect();
    if records.is_empty() {
        return Ok(());
    }
    let ideal = records[0]["heavy_ideal_requests"].as_f64().unwrap_or(1.0);
    let n = records.len() as i32;
    let root = SVGBackend::new(path, (900, 420)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "lab-memcached --dispatch: heavy requests completed in 3 s, heavy and light arriving in turn",
            ("sans-serif", 16),
        )
        .margin(12)
        .x_label_area_size(30)
        .y_label_area_size(190)
        .build_cartesian_2d(0.0..ideal * 1.25, (0..n).into_segmented())?;
    let names: Vec<String> =
        records.iter().map(|r| r["server"].as_str().unwrap_or("?").to_string()).collect();
    chart
        .configure_mesh()
        .label_style(("sans-serif", 13))
        .disable_y_mesh()
        .y_labels(names.len())
        .y_label_formatter(&|v| match v {
            SegmentValue::CenterOf(i) => names.get(*i as usize).cloned().unwrap_or_default(),
            _ => String::new(),
        })
        .x_label_formatter(&|v| format!("{v:.0}"))
        .x_desc("heavy requests completed (median of rounds)")
        .draw()?;
    chart.draw_series(records.iter().enumerate().map(|(i, r)| {
        let heavy = r["heavy_requests"].as_f64().unwrap_or(0.0);
        let color = if r["valid"] == true { RGBColor(31, 119, 180) } else { RGBColor(214, 39, 40) };
        let mut bar = Rectangle::new(
            [(0.0, SegmentValue::Exact(i as i32)), (heavy, SegmentValue::Exact(i as i32 + 1))],
            color.filled(),
        );
        bar.set_margin(4, 4, 0, 0);
        bar
    }))?;
    let ideal_line = [(ideal, SegmentValue::Exact(0)), (ideal, SegmentValue::Exact(n))];
    chart
        .draw_series(LineSeries::new(ideal_line, BLACK.stroke_width(2)))?
        .label("ideal: one heavy connection per worker")
        .legend(|(x, y)| PathElement::new([(x, y), (x + 16, y)], BLACK.stroke_width(2)));
    legend(&mut chart, SeriesLabelPosition::UpperMiddle)?;
    root.present()?;
    Ok(())
}
