//! Limits and windows of the HTTP/2 transport: message sizes bounded by what the model needs,
//! so that a peer cannot make the other side allocate without limit.

use crate::model::ModelSpec;

/// Images per embedding task at most: bounds the embeddings an answer carries.
pub const EMBED_CHUNK: usize = 4096;
/// Images the coordinator puts in one embedding task: a test set spreads over the workers. A
/// CPU worker computes an embedding task off the thread that answers HTTP/2 PINGs; a GPU
/// worker computes it on that thread, so a task must end well within two `--keepalive`
/// periods (6 s by default); on one core and the portable CPU kernels, a 512-image CIFAR-10
/// task took 1.5-1.9 s.
pub const EMBED_TASK_IMAGES: usize = 512;
const _: () = assert!(EMBED_TASK_IMAGES <= EMBED_CHUNK);
/// Room beyond the payload for the message's other fields.
const MARGIN_BYTES: usize = 64 << 10;
/// Largest message a worker accepts from a coordinator: enough for the largest model's state
/// (three parameter vectors of a 4096-wide embedding, about 5 MB) and a 65,536-pair task.
pub const WORKER_MAX_MESSAGE_BYTES: usize = 16 << 20;
/// Largest message a worker may send: an embedding task's answer at the widest embedding.
pub const WORKER_MAX_SEND_BYTES: usize =
    EMBED_CHUNK * crate::model::MAX_EMBEDDING * 4 + MARGIN_BYTES;

/// Largest message either side of a run of `spec` with global batches of `batch` pairs needs:
/// the optimizer state (three parameter vectors), an embedding task's answer, or a task's pair
/// lists, plus a margin. The coordinator refuses anything larger.
pub fn message_limit(spec: &ModelSpec, batch: usize) -> usize {
    let state = 3 * spec.num_params() * 4;
    let embeddings = EMBED_CHUNK * spec.out_width() * 4;
    // A pair is two u32 indices and a bool, each with its protobuf packing.
    let pairs = batch * 16;
    state.max(embeddings).max(pairs) + MARGIN_BYTES
}
/// HTTP/2 flow-control windows. The default 64 KiB window makes every 250 KB weights or gradient
/// message wait for several WINDOW_UPDATE round trips; measured on loopback that cost as much
/// as the step's compute.
pub const STREAM_WINDOW_BYTES: u32 = 8 << 20;
/// Connection-level window: room for several streams' windows.
pub const CONNECTION_WINDOW_BYTES: u32 = 32 << 20;
/// Largest HTTP/2 frame either side accepts (h2's default is 16 KiB, the protocol's minimum): a
/// 247 KB weights or gradient message then goes in one DATA frame rather than sixteen.
pub const MAX_FRAME_BYTES: u32 = 1 << 20;
