//! What lab-top shows: the state kept between readings ([`Watch`]) and the one drawing of it
//! ([`draw`]), used for the live screen and, rendered into a buffer, for `--once`'s plain text.
//!
//! ```text
//!   header       arch, pid, uptime, address; requests/s and accepts/s with their counts; fairness
//!   accept queue one line per listener: a gauge against the backlog, a sparkline of its history
//!   workers      one row per worker: rates per second, open connections, share of the requests
//!   kernel       /proc/net/netstat's listen and SYN-cookie counters per second (when /stats has them)
//!   keys         q p s
//! ```

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use ratatui::backend::TestBackend;
use ratatui::layout::{Constraint, Flex, Layout, Rect};
use ratatui::style::{Color, Modifier, Stylize};
use ratatui::text::Line;
use ratatui::widgets::{Block, Cell, Gauge, Paragraph, Row, Sparkline, Table};
use ratatui::{Frame, Terminal};

use crate::rates::{executes_requests, Rates, RingRates};
use crate::sample::Sample;

/// Readings of the accept queue kept for the sparkline (at 250 ms, the last 30 seconds).
const QUEUE_HISTORY: usize = 120;
/// The screen's rates span about this long. A single 250 ms interval on a busy machine can read
/// half or twice the true rate; over a second the figures hold still enough to read.
const RATE_WINDOW: Duration = Duration::from_secs(1);

/// Everything the screen shows, updated reading by reading.
pub struct Watch {
    /// The server as the user named it.
    pub target: String,
    pub interval: Duration,
    /// The last readings of one server, oldest first: the intervals of one [`RATE_WINDOW`].
    readings: VecDeque<Sample>,
    /// From the oldest of `readings` to the newest; `None` until there are two.
    pub rates: Option<Rates>,
    /// Each listener's recent accept-queue lengths, oldest first.
    queue_history: Vec<VecDeque<u64>>,
    /// Why the last reading failed, while the server cannot be read.
    pub problem: Option<String>,
    /// When the last reading arrived: a server too busy to answer /stats (lab-epoll in a /sleep)
    /// shows as a reading that is late.
    last_answer: Option<Instant>,
    /// While the reading is late: the accept queues read from the kernel's socket table instead.
    queues_from_kernel: Option<Vec<u64>>,
    pub paused: bool,
    pub sort_by_requests: bool,
}

impl Watch {
    pub fn new(target: String, interval: Duration) -> Watch {
        Watch {
            target,
            interval,
            readings: VecDeque::new(),
            rates: None,
            queue_history: Vec::new(),
            problem: None,
            last_answer: None,
            queues_from_kernel: None,
            paused: false,
            sort_by_requests: false,
        }
    }

    /// Takes in one reading, or the reason there is none. While paused, readings are dropped, so
    /// the screen holds still (the first rates after a pause are the average over it).
    pub fn record(&mut self, reading: Result<Sample, String>) {
        if self.paused {
            return;
        }
        let sample = match reading {
            Ok(sample) => sample,
            Err(problem) => {
                // The last rates are no longer true; the counts stay, as the last ones known.
                self.problem = Some(problem);
                self.rates = None;
                return;
            }
        };
        self.problem = None;
        self.last_answer = Some(Instant::now());
        self.queues_from_kernel = None;
        if self.latest().is_some_and(|before| before.pid != sample.pid) {
            self.readings.clear();
        }
        if self.readings.is_empty() || self.queue_history.len() != sample.listeners.len() {
            self.queue_history = vec![VecDeque::new(); sample.listeners.len()];
        }
        self.push_queues(sample.listeners.iter().map(|listener| listener.accept_queue));
        let intervals = (RATE_WINDOW.as_secs_f64() / self.interval.as_secs_f64()).round().max(1.0) as usize;
        if self.readings.len() > intervals {
            self.readings.pop_front();
        }
        self.readings.push_back(sample);
        self.rates = Rates::between(&self.readings[0], self.latest().expect("just pushed"));
    }

    fn push_queues(&mut self, queues: impl Iterator<Item = u64>) {
        for (history, queue) in self.queue_history.iter_mut().zip(queues) {
            if history.len() == QUEUE_HISTORY {
                history.pop_front();
            }
            history.push_back(queue);
        }
    }

    /// Whether the server has not answered /stats for a while (busy, stalled, or gone).
    pub fn is_late(&self) -> bool {
        self.last_answer.is_some_and(|at| at.elapsed() > self.late_after())
    }

    /// The accept queues as the kernel's socket table has them now, for a server that is late
    /// with /stats. They are matched to the listeners in order; a table that does not have as many
    /// sockets (lab-top on another host) is ignored.
    pub fn record_queues_from_kernel(&mut self, queues: Vec<u64>) {
        if self.paused || queues.len() != self.queue_history.len() {
            return;
        }
        self.push_queues(queues.iter().copied());
        self.queues_from_kernel = Some(queues);
    }

    /// The newest reading.
    pub fn latest(&self) -> Option<&Sample> {
        self.readings.back()
    }

    /// How long after the last reading the next one counts as late.
    pub fn late_after(&self) -> Duration {
        (self.interval * 3).max(Duration::from_secs(1))
    }

    pub fn toggle_pause(&mut self) {
        self.paused = !self.paused;
    }

    /// Screen lines the whole view needs: the live screen shows less when it is smaller.
    pub fn height(&self) -> u16 {
        let (listeners, workers, kernel) = match self.latest() {
            Some(sample) => (sample.listeners.len(), sample.workers.len(), sample.kernel.is_some()),
            None => (1, 0, false),
        };
        let panels = 5 + (listeners + 2) + (workers + 3) + if kernel { 4 } else { 0 } + 1;
        u16::try_from(panels).unwrap_or(u16::MAX)
    }
}

/// Draws the whole view into `frame`.
pub fn draw(frame: &mut Frame, watch: &Watch) {
    let sample = watch.latest();
    let kernel_rows = if sample.is_some_and(|s| s.kernel.is_some()) { 4 } else { 0 };
    let [header, queues, workers, kernel, keys] = Layout::vertical([
        Constraint::Length(5),
        Constraint::Length(sample.map_or(1, |s| s.listeners.len() as u16) + 2),
        Constraint::Length(sample.map_or(0, |s| s.workers.len() as u16) + 3),
        Constraint::Length(kernel_rows),
        Constraint::Length(1),
    ])
    .flex(Flex::Start)
    .areas(frame.area());
    draw_header(frame, header, watch);
    if let Some(sample) = sample {
        draw_queues(frame, queues, watch, sample);
        draw_workers(frame, workers, watch, sample);
        if let Some(counters) = &sample.kernel {
            draw_kernel(frame, kernel, watch.rates.as_ref(), counters);
        }
    }
    let sort = if watch.sort_by_requests { "by requests/s" } else { "by id" };
    let keys_line = Line::from(vec![
        " q".bold(),
        " quit   ".into(),
        "p".bold(),
        if watch.paused { " resume   ".into() } else { " pause   ".into() },
        "s".bold(),
        format!(" sort ({sort})   every {} ms", watch.interval.as_millis()).into(),
        match &watch.rates {
            Some(rates) => format!(", rates over {:.2} s", rates.seconds).into(),
            None => "".into(),
        },
    ]);
    frame.render_widget(Paragraph::new(keys_line).dark_gray(), keys);
}

fn draw_header(frame: &mut Frame, area: Rect, watch: &Watch) {
    let waited = watch.last_answer.map_or(Duration::ZERO, |at| at.elapsed());
    let status = match (&watch.problem, watch.paused) {
        (Some(problem), _) => format!(" {problem}; retrying ").white().on_red().bold(),
        (None, true) => " PAUSED ".yellow().bold(),
        (None, false) if watch.latest().is_none() => " waiting for the first reading ".into(),
        (None, false) if waited > watch.late_after() => {
            format!(" no answer to /stats for {:.1} s: busy? ", waited.as_secs_f64()).black().on_yellow()
        }
        (None, false) => " live ".green(),
    };
    let (mut first, mut second, mut third) = (vec![], vec![], vec![]);
    if let Some(sample) = watch.latest() {
        first = vec![
            sample.arch.clone().bold(),
            format!("  pid {}  up {}  ", sample.pid, uptime(sample.uptime_ms)).into(),
        ];
        let rates = watch.rates.as_ref();
        let fairness = match rates.and_then(|r| r.fairness(sample)) {
            Some(index) => format!("{index:.3}"),
            None => "-".into(),
        };
        second = vec![
            "requests ".into(),
            format!("{}/s", per_second(rates.map(|r| r.requests))).bold(),
            format!(" ({})   accepts ", grouped(sample.totals.requests)).into(),
            format!("{}/s", per_second(rates.map(|r| r.accepted))).bold(),
            format!(" ({})", grouped(sample.totals.accepted)).into(),
        ];
        let executing = sample.workers.iter().filter(|worker| executes_requests(&worker.role)).count();
        third = vec![
            format!(
                "open {}   rejected {}   fairness ",
                grouped(sample.totals.open),
                grouped(sample.totals.rejected)
            )
            .into(),
            fairness.bold(),
            format!(" (Jain's index over {executing} executing)").into(),
        ];
    }
    first.push(watch.target.as_str().into());
    let block = Block::bordered().title(" lab-top ".bold()).title(Line::from(status).right_aligned());
    let lines = vec![Line::from(first), Line::from(second), Line::from(third)];
    frame.render_widget(Paragraph::new(lines).block(block), area);
}

fn draw_queues(frame: &mut Frame, area: Rect, watch: &Watch, sample: &Sample) {
    let source = match watch.queues_from_kernel {
        None => "",
        Some(_) => "; now from /proc/net/tcp, while /stats is late",
    };
    let block = Block::bordered().title(format!(" accept queue / backlog, its history and peak{source} "));
    let inner = block.inner(area);
    frame.render_widget(block, area);
    let rows = Layout::vertical(vec![Constraint::Length(1); sample.listeners.len()]).split(inner);
    for (index, (listener, history)) in sample.listeners.iter().zip(&watch.queue_history).enumerate() {
        let row = rows[index];
        let queue = watch.queues_from_kernel.as_ref().map_or(listener.accept_queue, |queues| queues[index]);
        let [addr, gauge, sparkline, peak] = Layout::horizontal([
            Constraint::Length(22),
            Constraint::Length(30),
            Constraint::Fill(1),
            Constraint::Length(12),
        ])
        .spacing(1)
        .areas(row);
        let ratio = (queue as f64 / listener.backlog.max(1) as f64).min(1.0);
        let colour = if ratio > 0.5 { Color::Red } else { Color::Cyan };
        frame.render_widget(Paragraph::new(listener.addr.as_str()), addr);
        let label = format!("{queue}/{}", listener.backlog);
        frame.render_widget(Gauge::default().ratio(ratio).label(label).gauge_style(colour), gauge);
        let history: Vec<u64> = history.iter().copied().collect();
        let shown = &history[history.len().saturating_sub(usize::from(sparkline.width))..];
        // Scaled to its own peak, so that a few connections waiting show; the peak says how many.
        let most = shown.iter().copied().max().unwrap_or(0);
        frame.render_widget(Sparkline::default().data(shown).max(most.max(1)).style(colour), sparkline);
        frame.render_widget(Paragraph::new(format!("peak {most}")), peak);
    }
}

fn draw_workers(frame: &mut Frame, area: Rect, watch: &Watch, sample: &Sample) {
    const FIXED: [u16; 8] = [3, 10, 3, 10, 10, 9, 8, 6];
    // lab-uring's rings add two columns, io_uring_enter calls per request and receives per second
    // that found no provided buffer, and their submissions, completions and enters per second to
    // the title.
    const RING: [u16; 2] = [9, 8];
    let rings = sample.workers.iter().any(|worker| worker.ring.is_some());
    // lab-reuseport's --steer load: each worker's published load, as the program reads it (how long
    // its current batch has run, its queue as the program counts it, and what the program sent it).
    const LOAD: [u16; 3] = [8, 7, 9];
    let loads = sample.workers.iter().any(|worker| worker.load.is_some());
    let fixed: Vec<u16> = FIXED
        .iter()
        .chain(if rings { &RING[..] } else { &[] })
        .chain(if loads { &LOAD[..] } else { &[] })
        .copied()
        .collect();
    // The share column takes what the others leave: a bar, a space and `100%`.
    let columns = fixed.len() as u16 + 1;
    let share_width = area.width.saturating_sub(2 + fixed.iter().sum::<u16>() + columns - 1).max(6);
    let bar_width = usize::from(share_width - 5);
    let rates = watch.rates.as_ref();
    let total: f64 = rates.map_or(0.0, |r| r.workers.iter().map(|w| w.requests).sum());
    let mut order: Vec<usize> = (0..sample.workers.len()).collect();
    if let (true, Some(rates)) = (watch.sort_by_requests, rates) {
        order.sort_by(|&a, &b| rates.workers[b].requests.total_cmp(&rates.workers[a].requests));
    }
    let rows =
        order.into_iter().map(|index| {
            let worker = &sample.workers[index];
            let rate = rates.map(|r| &r.workers[index]);
            let share =
                rate.filter(|_| total > 0.0 && executes_requests(&worker.role)).map(|r| r.requests / total);
            let mut cells = vec![
                Cell::from(worker.id.to_string()),
                Cell::from(worker.role.as_str()),
                Cell::from(worker.cpu.map_or("-".into(), |cpu| cpu.to_string())),
                Cell::from(Line::from(per_second(rate.map(|r| r.accepted))).right_aligned()),
                Cell::from(Line::from(per_second(rate.map(|r| r.requests))).right_aligned().bold()),
                Cell::from(Line::from(per_second(rate.map(|r| r.wakeups))).right_aligned()),
                Cell::from(Line::from(per_second(rate.map(|r| r.context_switches))).right_aligned()),
                Cell::from(Line::from(grouped(worker.open)).right_aligned()),
            ];
            if rings {
                let ring = rate.and_then(|r| r.ring);
                cells.extend([
                    Cell::from(
                        Line::from(
                            ring.and_then(|r| r.enters_per_request).map_or("-".into(), |n| format!("{n:.3}")),
                        )
                        .right_aligned(),
                    ),
                    Cell::from(Line::from(per_second(ring.map(|r| r.enobufs))).right_aligned()),
                ]);
            }
            if loads {
                let load = worker.load;
                let text = |value: Option<u64>| Line::from(value.map_or("-".into(), grouped)).right_aligned();
                let busy = load.filter(|l| l.live).map(|l| l.busy_ms);
                cells.extend([
                    Cell::from(text(busy)),
                    Cell::from(text(load.map(|l| l.queued))),
                    Cell::from(text(load.map(|l| l.steered))),
                ]);
            }
            cells.push(
                Cell::from(share.map_or(String::new(), |share| {
                    format!("{} {:>3.0}%", bar(share, bar_width), share * 100.0)
                }))
                .fg(Color::Green),
            );
            Row::new(cells)
        });
    let mut names = vec!["id", "role", "cpu", "accepted/s", "requests/s", "wakeups/s", "ctx sw/s", "open"];
    if rings {
        names.extend(["enter/req", "nobufs/s"]);
    }
    if loads {
        names.extend(["busy ms", "queued", "steered"]);
    }
    names.push("share");
    let header = Row::new(names).add_modifier(Modifier::BOLD);
    let widths: Vec<Constraint> =
        fixed.into_iter().map(Constraint::Length).chain([Constraint::Fill(1)]).collect();
    let mut title = format!(" workers: {}, per second ", sample.workers.len());
    if let (true, Some(rates)) = (rings, rates) {
        let sum = |counter: fn(&RingRates) -> f64| {
            rates.workers.iter().filter_map(|w| w.ring.as_ref()).map(counter).sum()
        };
        title += &format!(
            "; rings: {} sqe/s, {} cqe/s, {} io_uring_enter/s ",
            per_second(Some(sum(|r| r.submissions))),
            per_second(Some(sum(|r| r.completions))),
            per_second(Some(sum(|r| r.enters)))
        );
    }
    frame.render_widget(Table::new(rows, widths).header(header).block(Block::bordered().title(title)), area);
}

fn draw_kernel(frame: &mut Frame, area: Rect, rates: Option<&Rates>, counters: &[(String, u64)]) {
    let cells: Vec<Cell> = counters
        .iter()
        .map(|(name, total)| {
            let rate = rates
                .and_then(|r| r.kernel.as_ref()?.iter().find(|(other, _)| other == name))
                .map(|(_, rate)| *rate);
            // Moving now: marked, so that it shows in --once's plain text too, and in red.
            let moving = rate.is_some_and(|rate| rate > 0.0);
            let text = format!(
                "{}{name} {}/s ({})",
                if moving { "▲ " } else { "" },
                per_second(rate),
                grouped(*total)
            );
            if moving {
                Cell::from(text).red().bold()
            } else {
                Cell::from(text)
            }
        })
        .collect();
    let rows: Vec<Row> = cells.chunks(3).map(|row| Row::new(row.to_vec())).collect();
    let block = Block::bordered().title(" kernel: /proc/net/netstat, per second (in all) ");
    frame.render_widget(Table::new(rows, [Constraint::Ratio(1, 3); 3]).block(block), area);
}

/// The view as plain text, `width` columns wide and as tall as it needs: `--once`'s output.
pub fn plain_text(watch: &Watch, width: u16) -> String {
    let mut terminal = Terminal::new(TestBackend::new(width, watch.height())).expect("a terminal in memory");
    terminal.draw(|frame| draw(frame, watch)).expect("draw in memory");
    let buffer = terminal.backend().buffer();
    let mut text = String::new();
    for y in 0..buffer.area.height {
        let line: String = (0..buffer.area.width).map(|x| buffer[(x, y)].symbol()).collect();
        text.push_str(line.trim_end());
        text.push('\n');
    }
    text
}

/// A rate as a whole number with grouped digits, or `-` before there are two readings.
fn per_second(rate: Option<f64>) -> String {
    rate.map_or("-".into(), |rate| grouped(rate.round() as u64))
}

/// 1234567 → `1,234,567`.
fn grouped(number: u64) -> String {
    let digits: Vec<char> = number.to_string().chars().collect();
    let groups: Vec<String> = digits.rchunks(3).rev().map(|group| group.iter().collect()).collect();
    groups.join(",")
}

/// 83_456 ms → `1m23s`.
fn uptime(ms: u64) -> String {
    let seconds = ms / 1000;
    match seconds {
        0..60 => format!("{seconds}s"),
        60..3600 => format!("{}m{:02}s", seconds / 60, seconds % 60),
        _ => format!("{}h{:02}m{:02}s", seconds / 3600, seconds / 60 % 60, seconds % 60),
    }
}

/// A bar `width` characters long filled to `fraction`, in eighths of a character.
fn bar(fraction: f64, width: usize) -> String {
    const EIGHTHS: [&str; 8] = ["", "▏", "▎", "▍", "▌", "▋", "▊", "▉"];
    let eighths = (fraction.clamp(0.0, 1.0) * width as f64 * 8.0).round() as usize;
    let mut text = "█".repeat(eighths / 8) + EIGHTHS[eighths % 8];
    let used = eighths.div_ceil(8);
    text.push_str(&" ".repeat(width - used));
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sample::{Listener, Totals, Worker};

    fn reading(pid: u64, uptime_ms: u64, requests: u64, accept_queue: u64) -> Sample {
        let worker = Worker {
            id: 0,
            role: "loop".into(),
            cpu: None,
            accepted: 0,
            requests,
            wakeups: 0,
            context_switches: 0,
            open: 0,
            ring: None,
            load: None,
        };
        Sample {
            arch: "epoll".into(),
            pid,
            uptime_ms,
            listeners: vec![Listener { addr: "127.0.0.1:8080".into(), backlog: 511, accept_queue }],
            workers: vec![worker],
            totals: Totals { accepted: 0, requests, open: 0, rejected: 0 },
            kernel: None,
        }
    }

    #[test]
    fn the_screens_rates_span_the_last_second_of_one_server() {
        let mut watch = Watch::new("x".into(), Duration::from_millis(250));
        watch.record(Ok(reading(1, 1000, 0, 0)));
        assert_eq!(watch.rates, None, "one reading has no rate");
        // 1000 requests in each of the first two intervals, none after: over the last second
        // (four intervals) the rate falls as the busy intervals leave the window.
        for (uptime, requests, expected) in [
            (1250, 1000, 4000.0),
            (1500, 2000, 4000.0),
            (1750, 2000, 8000.0 / 3.0),
            (2000, 2000, 2000.0),
            (2250, 2000, 1000.0),
            (2500, 2000, 0.0),
        ] {
            watch.record(Ok(reading(1, uptime, requests, 0)));
            assert_eq!(watch.rates.as_ref().unwrap().requests, expected, "at {uptime} ms");
        }
        assert_eq!(watch.rates.as_ref().unwrap().seconds, 1.0);

        watch.record(Err("connect: refused".into()));
        assert_eq!(
            (watch.rates.is_none(), watch.latest().unwrap().uptime_ms),
            (true, 2500),
            "stale rates hidden, counts kept"
        );
        watch.record(Ok(reading(2, 100, 50, 7)));
        assert_eq!((watch.rates.is_none(), watch.problem.is_none()), (true, true), "a new pid starts afresh");
        assert_eq!(watch.queue_history, vec![VecDeque::from([7])]);

        watch.toggle_pause();
        watch.record(Ok(reading(2, 350, 80, 0)));
        assert_eq!(watch.latest().unwrap().uptime_ms, 100, "paused: the screen holds still");
        watch.toggle_pause();
        watch.record(Ok(reading(2, 600, 150, 0)));
        assert_eq!(watch.rates.as_ref().unwrap().requests, 200.0);
    }

    #[test]
    fn a_steered_workers_published_load_has_its_columns() {
        let mut watch = Watch::new("x".into(), Duration::from_millis(250));
        let mut steered = reading(1, 1000, 0, 0);
        steered.workers[0].load =
            Some(crate::sample::Load { live: true, busy_ms: 2900, queued: 3, steered: 41 });
        watch.record(Ok(steered));
        let text = plain_text(&watch, 140);
        assert!(text.contains("busy ms") && text.contains("queued") && text.contains("steered"), "{text}");
        assert!(text.contains("2,900") && text.contains("41"), "{text}");
        watch.record(Ok(reading(2, 1000, 0, 0)));
        assert!(!plain_text(&watch, 140).contains("steered"), "no load, no columns");
    }

    #[test]
    fn the_kernel_panel_is_there_only_with_the_counters_and_marks_the_moving_ones() {
        let mut watch = Watch::new("http://127.0.0.1:8080".into(), Duration::from_millis(250));
        watch.record(Ok(reading(1, 1000, 0, 0)));
        watch.record(Ok(reading(1, 1250, 500, 3)));
        let text = plain_text(&watch, 100);
        assert!(text.contains("requests 2,000/s (500)") && text.contains("3/511"), "{text}");
        assert!(!text.contains("kernel"), "no kernel object, no panel:\n{text}");

        let with_kernel = |uptime_ms, overflows| {
            let mut sample = reading(1, uptime_ms, 500, 0);
            sample.kernel = Some(vec![("ListenOverflows".into(), overflows), ("ListenDrops".into(), 9)]);
            sample
        };
        let mut watch = Watch::new("x".into(), Duration::from_millis(250));
        watch.record(Ok(with_kernel(1000, 100)));
        watch.record(Ok(with_kernel(1250, 110)));
        let text = plain_text(&watch, 100);
        assert!(
            text.contains("▲ ListenOverflows 40/s (110)") && text.contains(" ListenDrops 0/s (9)"),
            "{text}"
        );
        assert!(!text.contains("▲ ListenDrops"), "{text}");
    }

    #[test]
    fn numbers_read_at_a_glance() {
        assert_eq!(grouped(0), "0");
        assert_eq!(grouped(999), "999");
        assert_eq!(grouped(1000), "1,000");
        assert_eq!(grouped(1234567), "1,234,567");
        assert_eq!(per_second(None), "-");
        assert_eq!(per_second(Some(52310.6)), "52,311");
        assert_eq!(uptime(4_999), "4s");
        assert_eq!(uptime(83_456), "1m23s");
        assert_eq!(uptime(3_723_000), "1h02m03s");
    }

    #[test]
    fn share_bars_fill_in_eighths_and_keep_their_width() {
        assert_eq!(bar(0.0, 4), "    ");
        assert_eq!(bar(1.0, 4), "████");
        assert_eq!(bar(0.5, 4), "██  ");
        assert_eq!(bar(1.0 / 32.0, 4), "▏   ");
        assert!([0.0, 0.13, 0.5, 0.77, 1.0].iter().all(|&f| bar(f, 20).chars().count() == 20));
    }
}
