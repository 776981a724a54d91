//! The packet path: NFQUEUE sockets, batched receive and verdicts, the per-queue packet loop.

pub mod nfqueue;
