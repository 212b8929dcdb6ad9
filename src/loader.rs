//! The source seam: where a group gets a value it does not have.

use std::future::Future;

use async_trait::async_trait;
use bytes::Bytes;

use crate::error::Result;

/// Loads the value of a key from the source of truth (a database, an HTTP service).
///
/// Return [`crate::Error::NotFound`] when the source has no value, any other error for a
/// failure; errors reach the caller and are never cached.
#[async_trait]
pub trait Loader: Send + Sync + 'static {
    /// Loads `key`.
    async fn load(&self, key: &str) -> Result<Bytes>;

    /// Loads `key` for a group whose values are at most `max_len` bytes. A loader that
    /// reads a stream should stop there and fail; this default loads in full and leaves
    /// the check to the group. Either way a value over the limit is a failed load.
    async fn load_within(&self, key: &str, max_len: usize) -> Result<Bytes> {
        let _ = max_len;
        self.load(key).await
    }
}

/// Adapts an async closure into a [`Loader`], like groupcache's `GetterFunc`.
///
/// ```
/// # use peercache::{Error, Loader, LoaderFn};
/// # futures::executor::block_on(async {
/// let upper = LoaderFn(|key: String| async move {
///     Ok::<_, Error>(bytes::Bytes::from(key.to_uppercase()))
/// });
/// assert_eq!(upper.load("abc").await.unwrap(), "ABC");
/// # });
/// ```
pub struct LoaderFn<F>(pub F);

#[async_trait]
impl<F, Fut> Loader for LoaderFn<F>
where
    F: Fn(String) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Bytes>> + Send + 'static,
{
    async fn load(&self, key: &str) -> Result<Bytes> {
        (self.0)(key.to_owned()).await
    }
}
