//! A worker's side of NCCL's rendezvous through the coordinator: rank 0 creates the unique id
//! and sends it; every rank gets it relayed back, forms the communicator and says so.

use std::time::Duration;

use candle_core::Device;
use tokio::sync::mpsc;

use super::nccl_reducer::NcclReducer;
use crate::cluster::ClusterError;
use crate::cluster::protocol::proto::{CoordinatorMessage, Welcome, WorkerMessage, worker_message};

/// NCCL's rendezvous through the coordinator: rank 0 creates the unique id and sends it; every
/// rank gets it relayed back, forms the communicator (within `limit`) and says so.
#[cfg(feature = "nccl")]
pub(super) async fn nccl_rendezvous(
    welcome: &Welcome,
    device: &Device,
    limit: Duration,
    inbound: &mut tonic::Streaming<CoordinatorMessage>,
    out: &mpsc::Sender<WorkerMessage>,
) -> Result<NcclReducer, ClusterError> {
    use crate::cluster::nccl::{NcclGroup, unique_id};
    use crate::cluster::protocol::proto::{NcclId, NcclReady, coordinator_message};
    let send = |body| async move {
        out.send(WorkerMessage { body: Some(body) })
            .await
            .map_err(|_| ClusterError::Setup("the outgoing stream closed".into()))
    };
    if welcome.rank == 0 {
        let id = unique_id()?;
        send(worker_message::Body::NcclId(NcclId {
            id: id.to_vec().into(),
        }))
        .await?;
    }
    let id = match tokio::time::timeout(limit, inbound.message()).await {
        Err(_) => {
            return Err(ClusterError::Timeout {
                what: "the coordinator to relay rank 0's NCCL id".into(),
                secs: limit.as_secs(),
            });
        }
        Ok(msg) => match msg
            .map_err(ClusterError::status("Session"))?
            .and_then(|m| m.body)
        {
            Some(coordinator_message::Body::NcclId(n)) => n.id,
            _ => {
                return Err(ClusterError::Protocol {
                    peer: "coordinator".into(),
                    what: "expected the NCCL id".into(),
                });
            }
        },
    };
    let (rank, world) = (welcome.rank as usize, welcome.world_size as usize);
    // Blocking is fine: this thread has nothing else to do until the communicator forms.
    let group = NcclGroup::join(&id, rank, world, device, limit)?;
    send(worker_message::Body::NcclReady(NcclReady {
        rank: welcome.rank,
    }))
    .await?;
    tracing::info!(rank, world, "NCCL communicator formed");
    Ok(NcclReducer::new(
        group,
        super::watchdog::Watchdog::start(limit),
    ))
}

/// Without NCCL compiled in, an NCCL run is refused with what to do.
#[cfg(not(feature = "nccl"))]
pub(super) async fn nccl_rendezvous(
    _welcome: &Welcome,
    _device: &Device,
    _limit: Duration,
    inbound: &mut tonic::Streaming<CoordinatorMessage>,
    out: &mpsc::Sender<WorkerMessage>,
) -> Result<NcclReducer, ClusterError> {
    let message = "this worker was built without NCCL: rebuild it with `cargo build --release --features nccl` (see ../shared/gpu/README.md)".to_string();
    let _ = out
        .send(WorkerMessage {
            body: Some(worker_message::Body::Error(
                crate::cluster::protocol::proto::WorkerError {
                    id: 0,
                    message: message.clone(),
                },
            )),
        })
        .await;
    // Let the error reach the coordinator before this process exits: it answers by ending
    // the session.
    let _ = tokio::time::timeout(Duration::from_secs(5), inbound.message()).await;
    Err(ClusterError::Setup(message))
}
