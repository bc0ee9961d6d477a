//! The requests, built once as bytes before the run: one per path of the mix, each with its weight,
//! so that sending one costs a copy and nothing else.

use crate::schedule::Rng;

/// What every request shares.
#[derive(Debug, Clone)]
pub struct RequestSpec {
    pub method: String,
    /// The `Host` header: the URL's authority.
    pub host: String,
    /// Extra header lines, `Name: value`; a `Host` among them replaces the default one.
    pub headers: Vec<String>,
    pub body_size: usize,
    /// Ask the server to close after answering (`Connection: close`).
    pub close: bool,
}

/// One path of the mix.
#[derive(Debug, Clone)]
pub struct PathRequest {
    /// The request target, e.g. `/spin?us=500`.
    pub target: String,
    pub weight: f64,
    /// The whole request on the wire.
    pub bytes: Vec<u8>,
    /// Whether the response carries a body (not for `HEAD`).
    pub has_body: bool,
}

/// The paths and a way to pick one by weight.
#[derive(Debug, Clone)]
pub struct Requests {
    paths: Vec<PathRequest>,
    /// Running sums of the weights, normalised to end at 1.
    cumulative: Vec<f64>,
}

impl Requests {
    /// One request per `(weight, target)`.
    pub fn build(mix: &[(f64, String)], spec: &RequestSpec) -> Self {
        let paths: Vec<PathRequest> = mix
            .iter()
            .map(|(weight, target)| PathRequest {
                target: target.clone(),
                weight: *weight,
                bytes: request_bytes(target, spec),
                has_body: !spec.method.eq_ignore_ascii_case("HEAD"),
            })
            .collect();
        let total: f64 = paths.iter().map(|p| p.weight).sum();
        let cumulative = paths
            .iter()
            .scan(0.0, |sum, path| {
                *sum += path.weight / total;
                Some(*sum)
            })
            .collect();
        Self { paths, cumulative }
    }

    /// Picks a path at random by weight (no randomness spent when there is one path).
    pub fn pick(&self, rng: &mut Rng) -> usize {
        if self.paths.len() == 1 {
            return 0;
        }
        let x = rng.next_f64();
        self.cumulative.partition_point(|&sum| sum <= x).min(self.paths.len() - 1)
    }

    pub fn get(&self, index: usize) -> &PathRequest {
        &self.paths[index]
    }

    pub fn paths(&self) -> &[PathRequest] {
        &self.paths
    }
}

fn request_bytes(target: &str, spec: &RequestSpec) -> Vec<u8> {
    let has_header = |name: &str| {
        spec.headers
            .iter()
            .any(|line| line.split(':').next().is_some_and(|n| n.trim().eq_ignore_ascii_case(name)))
    };
    let mut text = format!("{} {target} HTTP/1.1\r\n", spec.method);
    if !has_header("host") {
        text.push_str(&format!("Host: {}\r\n", spec.host));
    }
    for line in &spec.headers {
        text.push_str(line.trim());
        text.push_str("\r\n");
    }
    if spec.body_size > 0
        || spec.method.eq_ignore_ascii_case("POST")
        || spec.method.eq_ignore_ascii_case("PUT")
    {
        text.push_str(&format!("Content-Length: {}\r\n", spec.body_size));
    }
    if spec.close && !has_header("connection") {
        text.push_str("Connection: close\r\n");
    }
    text.push_str("\r\n");
    let mut bytes = text.into_bytes();
    bytes.resize(bytes.len() + spec.body_size, b'x');
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> RequestSpec {
        RequestSpec {
            method: "GET".into(),
            host: "127.0.0.1:8080".into(),
            headers: vec![],
            body_size: 0,
            close: false,
        }
    }

    #[test]
    fn requests_are_built_as_on_the_wire() {
        let requests = Requests::build(&[(1.0, "/".into())], &spec());
        assert_eq!(requests.get(0).bytes, b"GET / HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n\r\n");
        let post = RequestSpec {
            method: "POST".into(),
            headers: vec!["X-A: 1".into(), "host: example".into()],
            body_size: 3,
            close: true,
            ..spec()
        };
        let requests = Requests::build(&[(1.0, "/echo".into())], &post);
        assert_eq!(
            requests.get(0).bytes,
            b"POST /echo HTTP/1.1\r\nX-A: 1\r\nhost: example\r\nContent-Length: 3\r\nConnection: close\r\n\r\nxxx"
        );
        let head = RequestSpec { method: "HEAD".into(), ..spec() };
        assert!(!Requests::build(&[(1.0, "/".into())], &head).get(0).has_body);
    }

    #[test]
    fn paths_are_picked_by_weight() {
        let mix = [(99.5, "/a".to_string()), (0.5, "/b".to_string())];
        let requests = Requests::build(&mix, &spec());
        let mut rng = Rng::new(42);
        let mut counts = [0u32; 2];
        for _ in 0..1_000_000 {
            counts[requests.pick(&mut rng)] += 1;
        }
        // 5000 expected, standard deviation ~70.
        assert!((4600..=5400).contains(&counts[1]), "{counts:?}");
    }
}
