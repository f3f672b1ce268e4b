//! Gradient all-reduce among CUDA workers over NCCL, for a cluster whose replicas live on GPUs:
//! the coordinator relays one [`unique_id`] over gRPC, every worker [`NcclGroup::join`]s with it,
//! and gradients then sum on the GPUs instead of travelling through the coordinator.

use std::ffi::CStr;
use std::sync::mpsc;
use std::time::Duration;

use candle_core::cuda_backend::cudarc::nccl::{Comm, Id, ReduceOp, result, sys};
use candle_core::op::BackpropOp;
use candle_core::{CudaStorage, DType, Device, Storage, Tensor};

/// Length of an NCCL unique id, the bytes a coordinator relays to every rank.
pub const ID_LEN: usize = 128;

/// What went wrong with an NCCL group, naming the rank and world where there is one.
#[derive(Debug, thiserror::Error)]
pub enum NcclError {
    /// The rank, world or id handed to [`NcclGroup::join`] cannot form a group.
    #[error("NCCL rank {rank} of world {world}: {reason}")]
    InvalidGroup {
        /// The rank that asked to join.
        rank: usize,
        /// The group size it asked for.
        world: usize,
        /// Why the request is refused.
        reason: String,
    },
    /// The device is not a CUDA device, so NCCL cannot use it.
    #[error("NCCL rank {rank} of world {world}: device {device} is not a CUDA device")]
    NotCuda {
        /// The rank that asked.
        rank: usize,
        /// The group size.
        world: usize,
        /// The device it was given.
        device: String,
    },
    /// NCCL could not create a unique id (no usable network interface, library missing, ...).
    #[error("creating an NCCL unique id failed: {0}")]
    UniqueId(String),
    /// The helper thread could not make the device's CUDA context current.
    #[error("NCCL rank {rank} of world {world}: making the CUDA context current failed: {detail}")]
    Context {
        /// The rank that joined.
        rank: usize,
        /// The group size.
        world: usize,
        /// The CUDA driver's error.
        detail: String,
    },
    /// `ncclCommInitRank` returned an error.
    #[error("NCCL rank {rank} of world {world}: communicator init failed: {detail}")]
    Init {
        /// The rank that joined.
        rank: usize,
        /// The group size.
        world: usize,
        /// NCCL's error code and message.
        detail: String,
    },
    /// Not every rank joined within the timeout, so init was given up.
    #[error(
        "NCCL rank {rank} of world {world}: communicator init did not finish within {timeout:?} \
         (did all {world} ranks join with the same id?)"
    )]
    InitTimeout {
        /// The rank that waited.
        rank: usize,
        /// The group size it waited for.
        world: usize,
        /// How long it waited.
        timeout: Duration,
    },
    /// The init helper thread could not start or died without answering.
    #[error("NCCL rank {rank} of world {world}: communicator init thread {what}")]
    InitThread {
        /// The rank that joined.
        rank: usize,
        /// The group size.
        world: usize,
        /// What happened to the thread.
        what: String,
    },
    /// The tensor handed to [`NcclGroup::all_reduce_sum`] is not one NCCL can sum in place.
    #[error("NCCL rank {rank} of world {world}: cannot all-reduce this tensor: {reason}")]
    BadTensor {
        /// The rank that called.
        rank: usize,
        /// The group size.
        world: usize,
        /// What is wrong with the tensor.
        reason: String,
    },
    /// `ncclAllReduce` or the buffers around it failed.
    #[error("NCCL rank {rank} of world {world}: all-reduce of {len} f32 failed: {detail}")]
    AllReduce {
        /// The rank that called.
        rank: usize,
        /// The group size.
        world: usize,
        /// Number of elements being summed.
        len: usize,
        /// NCCL's or Candle's error.
        detail: String,
    },
}

/// Creates a fresh NCCL unique id; one rank (or the coordinator) makes it and relays its bytes.
pub fn unique_id() -> Result<[u8; ID_LEN], NcclError> {
    let id = Id::new().map_err(|e| NcclError::UniqueId(describe(&e)))?;
    // `c_char` is i8 on x86 and u8 on ARM: a cast, not a conversion, keeps the bytes.
    Ok(id.internal().map(|c| c as u8))
}

/// A joined NCCL communicator of one rank, bound to the Candle CUDA device it was joined on.
#[derive(Debug)]
pub struct NcclGroup {
    comm: Comm,
    device: Device,
    rank: usize,
    world: usize,
}

// SAFETY: an NCCL communicator may be driven from any thread as long as no two threads use it at
// once; `NcclGroup` is not `Sync` and `all_reduce_sum` takes `&self`, so moving it to another
// thread (a tokio task, say) can never make two threads use it concurrently.
unsafe impl Send for NcclGroup {}

/// Carries a freshly initialised communicator from the init thread to the joining thread.
struct SendComm(Comm);

// SAFETY: as for `NcclGroup`: the communicator is moved, never shared.
unsafe impl Send for SendComm {}

impl NcclGroup {
    /// Joins the group of `world` ranks named by `id_bytes` as `rank`, on `device`.
    ///
    /// `ncclCommInitRank` blocks until every rank has joined, and a rank that never comes would
    /// hang the worker forever; so the init runs on a helper thread and this returns
    /// [`NcclError::InitTimeout`] after `init_timeout`. The helper thread stays blocked in NCCL:
    /// only a non-blocking init can be cancelled, and its `ncclConfig_t` is laid out by cudarc
    /// for NCCL 2.30 while this project builds against 2.27. Should the group still form later,
    /// the helper drops the communicator, which aborts it (`ncclCommAbort`), so the other ranks
    /// fail rather than wait on a rank that has given up.
    pub fn join(
        id_bytes: &[u8],
        rank: usize,
        world: usize,
        device: &Device,
        init_timeout: Duration,
    ) -> Result<NcclGroup, NcclError> {
        let invalid = |reason: String| NcclError::InvalidGroup {
            rank,
            world,
            reason,
        };
        if world == 0 || i32::try_from(world).is_err() {
            return Err(invalid(format!("world size must be 1..={}", i32::MAX)));
        }
        if rank >= world {
            return Err(invalid(format!(
                "rank must be below the world size {world}"
            )));
        }
        let id: [u8; ID_LEN] = id_bytes.try_into().map_err(|_| {
            invalid(format!(
                "the unique id must be {ID_LEN} bytes, got {}",
                id_bytes.len()
            ))
        })?;
        let Device::Cuda(cuda) = device else {
            return Err(NcclError::NotCuda {
                rank,
                world,
                device: format!("{:?}", device.location()),
            });
        };
        // Sharing Candle's stream orders the all-reduce after the kernels that computed the
        // gradient and before the ones that read the sum, without any explicit synchronisation.
        let stream = cuda.cuda_stream();
        let id = Id::uninit(id.map(|b| b as std::ffi::c_char));

        let (tx, rx) = mpsc::sync_channel::<Result<SendComm, NcclError>>(1);
        std::thread::Builder::new()
            .name(format!("nccl-init-{rank}"))
            .spawn(move || {
                // NCCL picks the GPU from the calling thread's current CUDA context, and a new
                // thread has none.
                let joined = match stream.context().bind_to_thread() {
                    Err(e) => Err(NcclError::Context {
                        rank,
                        world,
                        detail: e.to_string(),
                    }),
                    Ok(()) => Comm::from_rank(stream, rank, world, id)
                        .map(SendComm)
                        .map_err(|e| NcclError::Init {
                            rank,
                            world,
                            detail: describe(&e),
                        }),
                };
                // A send fails only when `join` has timed out: dropping the late communicator
                // aborts it.
                let _ = tx.send(joined);
            })
            .map_err(|e| NcclError::InitThread {
                rank,
                world,
                what: format!("could not start: {e}"),
            })?;

        match rx.recv_timeout(init_timeout) {
            Ok(joined) => Ok(NcclGroup {
                comm: joined?.0,
                device: device.clone(),
                rank,
                world,
            }),
            Err(mpsc::RecvTimeoutError::Timeout) => Err(NcclError::InitTimeout {
                rank,
                world,
                timeout: init_timeout,
            }),
            Err(mpsc::RecvTimeoutError::Disconnected) => Err(NcclError::InitThread {
                rank,
                world,
                what: "died without answering (panicked)".into(),
            }),
        }
    }

    /// This process's rank in the group.
    pub fn rank(&self) -> usize {
        self.rank
    }

    /// Number of ranks in the group.
    pub fn world(&self) -> usize {
        self.world
    }

    /// Sums `grad` over all ranks into a new tensor of the same shape; every rank must call it
    /// with a tensor of the same length, in the same order.
    ///
    /// `grad` must be a contiguous f32 tensor on the device the group was joined on: another
    /// Candle CUDA device has its own stream, which the all-reduce would race with.
    pub fn all_reduce_sum(&self, grad: &Tensor) -> Result<Tensor, NcclError> {
        let bad = |reason: String| NcclError::BadTensor {
            rank: self.rank,
            world: self.world,
            reason,
        };
        if grad.dtype() != DType::F32 {
            return Err(bad(format!(
                "dtype {:?}, only f32 is supported",
                grad.dtype()
            )));
        }
        if !grad.device().same_device(&self.device) {
            return Err(bad(format!(
                "it is on {:?}, the group on {:?}",
                grad.device().location(),
                self.device.location()
            )));
        }
        let len = grad.elem_count();
        let failed = |detail: String| NcclError::AllReduce {
            rank: self.rank,
            world: self.world,
            len,
            detail,
        };

        let (storage, layout) = grad.storage_and_layout();
        let Storage::Cuda(src) = &*storage else {
            return Err(bad("its storage is not CUDA storage".into()));
        };
        let Some((start, end)) = layout.contiguous_offsets() else {
            return Err(bad("it is not contiguous".into()));
        };
        let src_slice = src
            .as_cuda_slice::<f32>()
            .map_err(|e| failed(e.to_string()))?;
        let cuda = src.device.clone();
        // Zeroing costs one memset on the stream; uninitialised memory would need `unsafe`.
        let mut sum = cuda
            .alloc_zeros::<f32>(len)
            .map_err(|e| failed(e.to_string()))?;
        self.comm
            .all_reduce(&src_slice.slice(start..end), &mut sum, &ReduceOp::Sum)
            .map_err(|e| failed(describe(&e)))?;
        drop(storage);

        Ok(Tensor::from_storage(
            Storage::Cuda(CudaStorage::wrap_cuda_slice(sum, cuda)),
            grad.shape().clone(),
            BackpropOp::none(),
            false,
        ))
    }

    /// Leaves the group at once, so that ranks still waiting in a collective fail instead of
    /// hanging (cudarc's `Comm` calls `ncclCommAbort` when dropped, and panics if that fails).
    pub fn abort(self) {
        drop(self);
    }
}

/// Spells out an NCCL error: cudarc's `Debug` prints only "NcclError".
fn describe(e: &result::NcclError) -> String {
    // SAFETY: both return pointers to NUL-terminated strings that NCCL keeps alive (a static
    // table, and a global buffer that a later error overwrites but never frees); we copy at once.
    let (what, last) = unsafe {
        let what = sys::ncclGetErrorString(e.0);
        let last = sys::ncclGetLastError(std::ptr::null_mut());
        let text = |p: *const std::ffi::c_char| {
            (!p.is_null()).then(|| CStr::from_ptr(p).to_string_lossy().into_owned())
        };
        (text(what), text(last))
    };
    let mut s = format!("{:?}", e.0);
    if let Some(what) = what {
        s.push_str(&format!(" ({what})"));
    }
    if let Some(last) = last.filter(|l| !l.is_empty()) {
        s.push_str(&format!(": {last}"));
    }
    s
}

#[cfg(test)]
mod tests;
