//! The main job for now: one node-local group in front of a slow "database", showing
//! read-through loading, hits, singleflight dedup, Set/Remove and TTL, with stats.
//!
//! Run: `cargo run --example quickstart`

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use peercache::{Error, GroupStats, LoaderFn, Registry};

/// Latency of the pretend database.
const DB_LATENCY: Duration = Duration::from_millis(50);

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let db_queries = Arc::new(AtomicU64::new(0));
    let queries = db_queries.clone();
    let registry = Registry::new();
    let users = registry
        .group("users")
        .capacity(16 << 20)
        .ttl(Duration::from_secs(2))
        .ttl_jitter(0.1)
        .loader(LoaderFn(move |key: String| {
            let queries = queries.clone();
            async move {
                queries.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(DB_LATENCY).await;
                match key.strip_prefix("user:") {
                    Some(id) if id.parse::<u32>().is_ok() => Ok(Bytes::from(format!(
                        "{{\"id\":{id},\"name\":\"user-{id}\"}}"
                    ))),
                    _ => Err(Error::NotFound(key)),
                }
            }
        }))
        .build()?;
    let sweeper = tokio::spawn({
        let registry = registry.clone();
        async move { registry.run_sweeper(Duration::from_millis(500)).await }
    });

    println!("1. cold read goes to the database, the second is a hit:");
    for _ in 0..2 {
        let t = Instant::now();
        let v = users.get("user:1").await?;
        println!(
            "   get user:1 -> {} in {:?}",
            String::from_utf8_lossy(&v),
            t.elapsed()
        );
    }

    println!("2. 1000 concurrent reads of a cold key share one load:");
    let before = db_queries.load(Ordering::SeqCst);
    let t = Instant::now();
    let tasks: Vec<_> = (0..1000)
        .map(|_| {
            let users = users.clone();
            tokio::spawn(async move { users.get("user:2").await })
        })
        .collect();
    for task in tasks {
        task.await??;
    }
    println!(
        "   1000 gets in {:?}, database queries: {}",
        t.elapsed(),
        db_queries.load(Ordering::SeqCst) - before
    );

    println!("3. errors come back with their message and are not cached:");
    for key in ["user:abc", "", &"k".repeat(2000)] {
        let shown: String = key.chars().take(12).collect();
        println!("   get {shown:?} -> {}", users.get(key).await.unwrap_err());
    }

    println!("4. set and remove (cache-aside writes):");
    let v = users
        .set(
            "user:1",
            Bytes::from("{\"id\":1,\"name\":\"renamed\"}"),
            None,
        )
        .await?;
    println!(
        "   set user:1 at version {v} -> {}",
        String::from_utf8_lossy(&users.get("user:1").await?)
    );
    let v = users.remove("user:1").await?;
    println!(
        "   remove user:1 at version {v}; next get reloads -> {}",
        String::from_utf8_lossy(&users.get("user:1").await?)
    );

    println!("5. entries expire after their TTL (2 s, up to 10% jitter):");
    tokio::time::sleep(Duration::from_millis(2600)).await;
    print_stats(&users.stats());
    sweeper.abort();
    Ok(())
}

fn print_stats(s: &GroupStats) {
    println!(
        "   group: gets={} hits={} loads={} loads_deduped={} local_load_errors={}",
        s.gets, s.hits, s.loads, s.loads_deduped, s.local_load_errors
    );
    let st = &s.store;
    println!(
        "   store: items={} bytes={}/{} inserts={} evictions={} expirations={} hits={} misses={}",
        st.items,
        st.bytes,
        st.capacity,
        st.inserts,
        st.evictions,
        st.expirations,
        st.hits,
        st.misses
    );
}
