//! Entry points of the fuzz targets (`fuzz/fuzz_targets/`), behind the `fuzzing`
//! feature. Each takes the fuzzer's bytes, builds requests from them with `arbitrary`,
//! runs them through the real code on a fresh node, and panics when an answer breaks a
//! rule of the API (a panic inside the code panics too). `tests/fuzz_regressions.rs`
//! feeds the inputs kept in `fuzz/regressions/TARGET/` through the same functions.
//!
//! Time is paused (tokio's test clock) and the loader answers at once, so a run is
//! deterministic: the same input takes the same path.

use std::sync::Arc;
use std::time::Duration;

use arbitrary::{Arbitrary, Unstructured};
use bytes::Bytes;

use crate::error::Error;
use crate::group::{HotConfig, PolicyKind, Registry};
use crate::loader::LoaderFn;
use crate::peer::PeerPicker;
use crate::ring::Member;

mod codec;
mod http;
mod peer;
mod registry;
mod resp;

pub use codec::codec;
pub use http::http;
pub use peer::peer;
pub use registry::registry;
pub use resp::resp;

/// Values of group "g" are limited to this, so the loader can exceed it.
const MAX_VALUE: usize = 1024;
/// Keys of group "g" are limited to this.
const MAX_KEY: usize = 64;
/// The groups' load timeout; the loader's "slow" keys take longer.
const TIMEOUT: Duration = Duration::from_secs(1);

/// Runs `work` on this thread's runtime: current-thread, time paused (it jumps ahead
/// whenever every task waits on a timer), made once per thread.
fn block_on<F: Future>(work: F) -> F::Output {
    thread_local! {
        static RUNTIME: tokio::runtime::Runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .start_paused(true)
            .build()
            .expect("a current-thread runtime builds");
    }
    RUNTIME.with(|rt| rt.block_on(work))
}

/// Decodes the whole of `data` as a `T`; `None` when the bytes do not make one (the
/// fuzzer then moves on).
fn decode<'a, T: Arbitrary<'a>>(data: &'a [u8]) -> Option<T> {
    T::arbitrary_take_rest(Unstructured::new(data)).ok()
}

/// What the loader answers for `key`, by its prefix: `missing…` is not found, `fail…`
/// fails, `big…` is over group "g"'s value limit, `slow…` outlasts the timeout, `bin…`
/// is not UTF-8; any other key's value is the key.
async fn load(key: String) -> crate::Result<Bytes> {
    if key.starts_with("missing") {
        Err(Error::NotFound(key))
    } else if key.starts_with("fail") {
        Err(Error::load(format!("source refused {key:?}")))
    } else if key.starts_with("big") {
        Ok(Bytes::from(vec![b'x'; MAX_VALUE + 1]))
    } else if key.starts_with("slow") {
        crate::time::sleep(TIMEOUT * 2).await;
        Ok(Bytes::from(key))
    } else if key.starts_with("bin") {
        Ok(Bytes::from_static(&[0xff, 0xfe, 0x00, 0x80]))
    } else {
        Ok(Bytes::from(key))
    }
}

/// A fresh single-member node's groups and picker: "g" (small limits, LRU, a TTL with
/// jitter) and "h" (defaults, a hot cache, another policy).
fn node() -> (Registry, Arc<PeerPicker>) {
    let groups = Registry::with_seed(1);
    groups
        .group("g")
        .capacity(16 << 10)
        .max_key_len(MAX_KEY)
        .max_value_len(MAX_VALUE)
        .ttl(Duration::from_secs(30))
        .ttl_jitter(0.1)
        .timeout(TIMEOUT)
        .loader(LoaderFn(load))
        .build()
        .expect("group g is valid");
    groups
        .group("h")
        .capacity(64 << 10)
        .policy(PolicyKind::Lru2 { protected: 0.8 })
        .hot(HotConfig::default())
        .timeout(TIMEOUT)
        .loader(LoaderFn(load))
        .build()
        .expect("group h is valid");
    let connect: crate::peer::Connect =
        Box::new(|m: &Member| Err(Error::Unavailable(format!("{} is not dialled", m.id))));
    // One vnode: a lone member owns every key however many it has, and sorting
    // hundreds of instrumented ring points would take most of each run.
    let picker = Arc::new(PeerPicker::new("fuzz", 1, connect));
    picker.set_members(vec![Member::new("fuzz", "127.0.0.1:1")]);
    groups
        .set_peers(picker.clone())
        .expect("a fresh registry has no peers yet");
    (groups, picker)
}

/// A group name: one of the node's two, or anything.
#[derive(Debug, Arbitrary)]
enum GroupName {
    G,
    H,
    Other(String),
}

impl GroupName {
    fn name(&self) -> &str {
        match self {
            GroupName::G => "g",
            GroupName::H => "h",
            GroupName::Other(s) => s,
        }
    }
}

/// A key: one the loader treats specially (by prefix, with a suffix), or anything.
#[derive(Debug, Arbitrary)]
enum Key {
    Plain(String),
    Special(Prefix, String),
}

#[derive(Debug, Arbitrary)]
enum Prefix {
    Missing,
    Fail,
    Big,
    Slow,
    Bin,
}

impl Key {
    fn text(&self) -> String {
        match self {
            Key::Plain(s) => s.clone(),
            Key::Special(p, rest) => {
                let p = match p {
                    Prefix::Missing => "missing",
                    Prefix::Fail => "fail",
                    Prefix::Big => "big",
                    Prefix::Slow => "slow",
                    Prefix::Bin => "bin",
                };
                format!("{p}{rest}")
            }
        }
    }
}
