// SPDX-License-Identifier: GPL-2.0-or-later
//! The latency plot, build/bench/latency.svg: a panel of horizontal box
//! plots per measurement, then the scale figures against N (log-log).

use plotters::{
    coord::Shift,
    element::DashedPathElement,
    prelude::*,
    style::text_anchor::{HPos, Pos, VPos},
};

use crate::{
    report::{fmt_time, Report, Sample, ScalePoint},
    stats::{median, quantile_sorted, sorted},
};

type Result<DB> = std::result::Result<(), DrawingAreaErrorKind<<DB as DrawingBackend>::ErrorType>>;

const W: u32 = 960;
/// Left of the plots: the labels of the boxes.
const LABEL_W: u32 = 295;
const ROW_H: u32 = 26;
const SCALE_H: u32 = 320;
const FONT: &str = "sans-serif";
const COLORS: [RGBColor; 6] = [
    RGBColor(0x44, 0x77, 0xaa),
    RGBColor(0xee, 0x66, 0x77),
    RGBColor(0x22, 0x88, 0x33),
    RGBColor(0xcc, 0xbb, 0x44),
    RGBColor(0x66, 0xcc, 0xee),
    RGBColor(0xaa, 0x33, 0x77),
];
/// The SVG backend writes font sizes divided by 1.24; this undoes it.
fn font(px: f64) -> FontDesc<'static> {
    (FONT, px * 1.24).into_font()
}

const GRID: RGBColor = RGBColor(0xdc, 0xdc, 0xdc);
/// The quantiles a box shows: dots, whiskers, box, median, box, whiskers, dots.
const QUANTILES: [f64; 7] = [0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99];

pub fn svg(report: &Report, header: &str) -> String {
    let heights: Vec<u32> = report
        .groups
        .iter()
        .map(|(_, items)| 26 + ROW_H * items.len() as u32 + 46)
        .collect();
    let scale_h = if report.scale.len() >= 2 { SCALE_H } else { 0 };
    let height = 50 + heights.iter().sum::<u32>() + scale_h + 20;
    let mut out = String::new();
    let mut draw = || -> Result<SVGBackend> {
        let root = SVGBackend::with_string(&mut out, (W, height)).into_drawing_area();
        root.fill(&WHITE)?;
        root.draw(&Text::new(
            "QMP monitor latency: boxes p25–p75, bar median (value printed), whiskers p5–p95, \
             dots p1/p99 (open: off the axis)",
            (10, 6),
            font(14.0).style(FontStyle::Bold),
        ))?;
        root.draw(&Text::new(header, (10, 28), font(11.0)))?;
        let mut y = 50;
        for ((title, items), &h) in report.groups.iter().zip(&heights) {
            box_group(&root.clone().shrink((0, y), (W, h)), title, items)?;
            y += h;
        }
        if scale_h > 0 {
            scale_chart(&root.clone().shrink((0, y), (W, scale_h)), &report.scale)?;
        }
        root.present()
    };
    draw().expect("latency.svg");
    out
}

fn title<DB: DrawingBackend>(area: &DrawingArea<DB, Shift>, title: &str) -> Result<DB> {
    area.draw(&Text::new(
        title,
        (10, 4),
        font(12.0).style(FontStyle::Bold),
    ))
}

/// Horizontal box plots, one row per sample list, the first on top.
fn box_group<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    name: &str,
    items: &[Sample],
) -> Result<DB> {
    title(area, name)?;
    let qs: Vec<[f64; 7]> = items
        .iter()
        .map(|(_, v)| {
            let s = sorted(v);
            QUANTILES.map(|q| quantile_sorted(&s, q))
        })
        .collect();
    // The axis reaches a little past the highest p95; p99 dots beyond it
    // sit at the edge as open circles.
    let max_us = qs.iter().map(|q| q[5]).fold(0.0, f64::max) * 1.3;
    let (unit_us, unit) = if max_us >= 5000.0 {
        (1000.0, "ms")
    } else {
        (1.0, "µs")
    };
    let max = max_us / unit_us;
    let n = items.len() as f64;
    let mut chart = ChartBuilder::on(area)
        .margin_top(26)
        .margin_right(80)
        .x_label_area_size(36)
        .y_label_area_size(LABEL_W)
        .build_cartesian_2d(0.0..max, 0.0..n)?;
    chart
        .configure_mesh()
        .disable_y_mesh()
        .disable_y_axis()
        .light_line_style(TRANSPARENT)
        .bold_line_style(GRID)
        .x_desc(unit)
        .x_label_formatter(&|t| format!("{}", (t * 1e6).round() / 1e6))
        .label_style(font(10.0))
        .axis_desc_style(font(10.0))
        .draw()?;
    let label = |text: String, dx: i32, size: f64, pos: HPos| {
        Text::new(
            text,
            (dx, 0),
            TextStyle::from(font(size)).pos(Pos::new(pos, VPos::Center)),
        )
    };
    for (i, (((name, v), q), c)) in items.iter().zip(&qs).zip(COLORS.iter().cycle()).enumerate() {
        let y = n - i as f64 - 0.5;
        let x = q.map(|v| v / unit_us);
        let bar = |x: f64, h: f64| vec![(x, y - h), (x, y + h)];
        chart.draw_series([
            PathElement::new(vec![(x[1], y), (x[5], y)], c),
            PathElement::new(bar(x[1], 0.19), c),
            PathElement::new(bar(x[5], 0.19), c),
        ])?;
        chart.draw_series([
            Rectangle::new([(x[2], y - 0.31), (x[4], y + 0.31)], c.mix(0.35).filled()),
            Rectangle::new([(x[2], y - 0.31), (x[4], y + 0.31)], c),
        ])?;
        chart.draw_series([PathElement::new(bar(x[3], 0.35), BLACK.stroke_width(2))])?;
        chart.draw_series([x[0], x[6]].map(|d| {
            if d <= max {
                Circle::new((d, y), 2, c.filled())
            } else {
                Circle::new((max, y), 2, ShapeStyle::from(c))
            }
        }))?;
        chart.draw_series([
            EmptyElement::at((0.0, y))
                + label(format!("{name}  n={}", v.len()), -15, 12.0, HPos::Right),
            EmptyElement::at((x[6].min(max), y)) + label(fmt_time(q[3]), 6, 10.0, HPos::Left),
        ])?;
    }
    Ok(())
}

/// Log-log chart of the scale figures against N.
fn scale_chart<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    points: &[ScalePoint],
) -> Result<DB> {
    title(
        area,
        "6. Scale: median time vs number of monitors N, each with a client (log-log)",
    )?;
    let med = |f: fn(&ScalePoint) -> &Vec<Vec<f64>>, k: usize| -> Vec<(f64, f64)> {
        points
            .iter()
            .map(|p| (p.n as f64, median(&f(p)[k])))
            .collect()
    };
    // Label, colour, dashed (command line), points.
    let series = [
        (
            "stop→STOP, monitor-add",
            COLORS[1],
            false,
            med(|p| &p.event, 0),
        ),
        (
            "stop→STOP, command line",
            COLORS[0],
            true,
            med(|p| &p.event, 1),
        ),
        (
            "query-monitors, monitor-add",
            COLORS[2],
            false,
            med(|p| &p.query, 0),
        ),
        (
            "query-monitors, command line",
            COLORS[3],
            true,
            med(|p| &p.query, 1),
        ),
        (
            "query-name, monitor-add",
            COLORS[4],
            false,
            med(|p| &p.name, 0),
        ),
        (
            "query-name, command line",
            COLORS[5],
            true,
            med(|p| &p.name, 1),
        ),
    ];
    let ns: Vec<f64> = points.iter().map(|p| p.n as f64).collect();
    let (nlo, nhi) = (ns[0], ns[ns.len() - 1]);
    let all = || series.iter().flat_map(|s| s.3.iter().map(|p| p.1));
    let lo = all().fold(f64::INFINITY, f64::min).log10().floor() as i32;
    let hi = all()
        .fold(0.0, f64::max)
        .log10()
        .ceil()
        .max(lo as f64 + 1.0) as i32;
    let decades: Vec<f64> = (lo..=hi).map(|e| 10f64.powi(e)).collect();
    let (ylo, yhi) = (decades[0], decades[decades.len() - 1]);
    let first = series[0].3[0].1;
    let mut chart = ChartBuilder::on(area)
        .margin_top(30)
        .margin_right(80)
        .x_label_area_size(20)
        .y_label_area_size(LABEL_W)
        .build_cartesian_2d(
            (nlo..nhi).log_scale().with_key_points(ns.clone()),
            (ylo..yhi).log_scale().with_key_points(decades),
        )?;
    chart
        .configure_mesh()
        .light_line_style(TRANSPARENT)
        .bold_line_style(GRID)
        .x_label_formatter(&|n| format!("N={n}"))
        .y_label_formatter(&|v| fmt_time(*v))
        .label_style(font(10.0))
        .draw()?;
    for (label, c, dashed, pts) in series {
        let style = c.stroke_width(2);
        if dashed {
            chart
                .draw_series(DashedLineSeries::new(pts.clone(), 6, 4, style))?
                .label(label)
                .legend(move |(x, y)| {
                    DashedPathElement::new(vec![(x, y), (x + 25, y)], 6, 4, style)
                });
        } else {
            chart
                .draw_series(LineSeries::new(pts.clone(), style))?
                .label(label)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 25, y)], style));
        }
        chart.draw_series(pts.iter().map(|&p| Circle::new(p, 3, c.filled())))?;
    }
    // Dotted reference line of slope 1 (linear growth) through the first
    // point, up to the top of the chart.
    let end = nhi.min(nlo * yhi / first);
    let dotted = ShapeStyle::from(RGBColor(0x80, 0x80, 0x80));
    chart
        .draw_series(DashedLineSeries::new(
            [(nlo, first), (end, first * end / nlo)],
            2,
            3,
            dotted,
        ))?
        .label("linear growth")
        .legend(move |(x, y)| DashedPathElement::new(vec![(x, y), (x + 25, y)], 2, 3, dotted));
    // The legend in the upper left, where small N and long times would be.
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .legend_area_size(30)
        .background_style(WHITE.mix(0.8))
        .border_style(GRID)
        .label_font(font(10.0))
        .draw()
}
