//! What the benchmarks share: the fake account's template, a free port and
//! the recipients CSV. Included by each with `#[path]` (not an example of its own).

use std::io::Write;
use std::path::Path;

use fake_wechat::FakeTemplate;

/// The template every benchmark job sends: long-term and subscribed by
/// everyone, so sends are gated by consent (no rejection on record) as in
/// production, and every one is accepted.
pub(crate) fn bench_template() -> FakeTemplate {
    FakeTemplate {
        id: "tmpl-bench".into(),
        title: "bench".into(),
        content: "{{thing1.DATA}}{{date2.DATA}}".into(),
        kind: 3,
        everyone_subscribed: true,
    }
}

/// A port free on the loopback now.
pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// The openid of benchmark recipient `i`.
pub(crate) fn bench_openid(i: usize) -> String {
    format!("oBench{i:022}")
}

/// Writes `n` recipients (openid, name) to `csv`, for `wxpush recipients import`.
pub(crate) fn write_recipients(csv: &Path, n: usize) {
    let mut f = std::io::BufWriter::new(std::fs::File::create(csv).unwrap());
    writeln!(f, "openid,name").unwrap();
    for i in 0..n {
        writeln!(f, "{},user{}", bench_openid(i), i % 1000).unwrap();
    }
}
