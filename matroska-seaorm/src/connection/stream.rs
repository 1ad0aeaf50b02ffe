//! The stream type of [`CachedDatabase`](super::CachedDatabase) and
//! [`CachedTransaction`](super::CachedTransaction).

use std::pin::Pin;
use std::task::{Context, Poll};

use futures_core::Stream;
use sea_orm::{DbErr, QueryResult};

/// Rows streamed through a cached connection: the database's own stream for
/// reads, or the rows of a write statement sent as a stream (it is run
/// first, so that it can be invalidated, then its rows are streamed).
#[derive(Debug)]
pub enum CachedStream<S> {
    /// The database's stream.
    Inner(S),
    /// The rows of a write, already read.
    Buffered(std::vec::IntoIter<QueryResult>),
}

impl<S> Stream for CachedStream<S>
where
    S: Stream<Item = Result<QueryResult, DbErr>> + Unpin,
{
    type Item = Result<QueryResult, DbErr>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        match self.get_mut() {
            CachedStream::Inner(s) => Pin::new(s).poll_next(cx),
            CachedStream::Buffered(rows) => Poll::Ready(rows.next().map(Ok)),
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        match self {
            CachedStream::Inner(s) => s.size_hint(),
            CachedStream::Buffered(rows) => rows.size_hint(),
        }
    }
}
