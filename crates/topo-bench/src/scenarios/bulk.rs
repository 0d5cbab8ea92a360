//! S6: bulk writes (restore's and topo2topo's write path) against the raw client's rate.

use toposphere::copy::{verify_all, write_all, DEFAULT_CONCURRENCY};

use crate::backend::{key, Backend};
use crate::harness::{rate, Ctx, Goal, Table, Unit};

/// S6: `n` new keys written 32 in flight, then read back, as restore does.
pub async fn s6(ctx: &Ctx, backends: &[Backend]) -> Table {
    let n = ctx.size(100_000, 2_000);
    let mut t = Table::new(
        "S6",
        &format!("restore's write path: {n} keys, {DEFAULT_CONCURRENCY} in flight"),
        "≥ 0.8 × the raw client's write rate with 32 in flight",
    );
    let value = vec![b'x'; 150];
    let rounds = ctx.size(3, ctx.rounds);
    for b in backends {
        let (conn, raw) = (b.server.global(), &b.raw);
        let (mut topo, mut rawr, mut verify) = (Vec::new(), Vec::new(), Vec::new());
        for round in 0..rounds {
            let items: Vec<(String, Vec<u8>)> = (0..n)
                .map(|i| (format!("s6/t{round}/k{i:06}"), value.clone()))
                .collect();
            let start = std::time::Instant::now();
            write_all(conn.as_ref(), &items, DEFAULT_CONCURRENCY, &|_| {})
                .await
                .expect("write_all");
            topo.push(n as f64 / start.elapsed().as_secs_f64());
            let start = std::time::Instant::now();
            verify_all(conn.as_ref(), "bench", &items, DEFAULT_CONCURRENCY)
                .await
                .expect("verify_all");
            verify.push(n as f64 / start.elapsed().as_secs_f64());
            let dir = key("/global", &format!("s6/r{round}"));
            raw.mkdir(&dir).await;
            let (dir, value) = (&dir, &value);
            rawr.push(
                rate(n, DEFAULT_CONCURRENCY, |i| async move {
                    raw.create(&format!("{dir}/k{i:06}"), value).await
                })
                .await,
            );
        }
        t.row(
            b.name,
            "write",
            Unit::PerSec,
            &topo,
            &rawr,
            Goal::RatioAtLeast(0.8),
        );
        t.row(
            b.name,
            "verify (read back)",
            Unit::PerSec,
            &verify,
            &[],
            Goal::None,
        );
    }
    t.note(format!(
        "{rounds} rounds; Toposphere writes with `toposphere::copy::write_all` (what `topo restore` \
         uses; `topo2topo` writes each record with the same `put` after reading the destination's \
         copy) through the statistics wrapper; the raw client creates the same number of new \
         150-byte keys with the same concurrency. Tail column = slowest 1 % of rounds."
    ));
    t
}
