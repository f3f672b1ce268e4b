//! Limits and windows of the HTTP/2 transport, the same on both sides.

/// Largest message either side accepts (weights are ~250 KB; embeddings of a shard a few MB).
pub const MAX_MESSAGE_BYTES: usize = 64 << 20;
/// HTTP/2 flow-control windows. The default 64 KiB window makes every 250 KB weights or gradient
/// message wait for several WINDOW_UPDATE round trips; measured on loopback that cost as much
/// as the step's compute.
pub const STREAM_WINDOW_BYTES: u32 = 8 << 20;
/// Connection-level window: room for several streams' windows.
pub const CONNECTION_WINDOW_BYTES: u32 = 32 << 20;
