//! The workers of a run as the engine sees them: who is in, what each was given, and running a
//! set of tasks to completion whatever happens to the workers meanwhile. A worker whose stream
//! fails or closes, that misses a deadline or that stops reading is declared lost: its session
//! is closed, its rank freed, its unanswered tasks given to the others, and a late answer from
//! it is dropped. A worker that joins mid-run is brought up to date and takes tasks from then
//! on.

use std::collections::{HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::runtime::Handle;
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::{SendTimeoutError, TrySendError};
use tonic::Status;

use super::events::{Event, WorkerLink};
use super::rank_table::RankTable;
use crate::cluster::ClusterError;
use crate::cluster::protocol::proto::{
    CoordinatorMessage, Join, Stop, Task, coordinator_message, task, worker_message,
};
use crate::results::{Membership, MembershipEvent};
use crate::stop::StopFlag;

/// Gradient slots of the shared file a worker on this host gets.
pub const SLOTS_PER_WORKER: usize = 2;

/// Why a worker whose outbound stream is gone is lost: its connection closed (the process died
/// or the network dropped it) while the coordinator had something to send.
const STREAM_CLOSED: &str = "its stream closed: the connection to it is gone";

/// What to do about a lost worker's process, given its id: a local one is killed (it may be
/// stopped or stuck) and, with `--respawn`, replaced.
pub type OnLost = Arc<Mutex<dyn FnMut(u32) -> Result<(), ClusterError> + Send>>;

/// An admitted worker.
pub struct Member {
    /// Its session (see [`WorkerLink::session`]).
    pub session: u64,
    /// Its rank.
    pub rank: u32,
    /// `host:pid at address`.
    pub peer: String,
    /// What it said at join.
    pub join: Join,
    /// Whether it mapped the shared file.
    pub shm: bool,
    /// Whether it holds the run's state and may take tasks.
    pub ready: bool,
    /// Its gradient slots in the shared file; burned, never reused, when it is lost, so a
    /// stopped worker that wakes up cannot write into another's gradient.
    slots: Vec<u32>,
    /// Tasks dispatched to it while the pool holds tasks back, for the next broadcast to carry.
    held: Vec<Task>,
    tx: mpsc::Sender<Result<CoordinatorMessage, Status>>,
}

/// A task for whichever worker gets it.
#[derive(Clone, Debug)]
pub struct Job {
    /// What to compute.
    pub kind: task::Kind,
    /// The weights version to compute at.
    pub version: u64,
}

/// Where a job went.
#[derive(Clone, Copy, Debug)]
struct Assignment {
    task: u64,
    session: u64,
    slot: Option<u32>,
    sent: Instant,
}

/// A job's answer.
#[derive(Debug)]
pub struct Done {
    /// When it arrived.
    pub at: Instant,
    /// When the job was sent (or, for a job sent ahead, when its collection began).
    pub started: Instant,
    /// The answer.
    pub body: worker_message::Body,
    /// Who answered: rank and `host:pid at address`.
    pub rank: u32,
    /// Its peer name.
    pub peer: String,
    /// The shared-file slot its gradient is in, if it was given one.
    pub slot: Option<u32>,
    /// Its position among the members answering, for the step clock.
    pub session: u64,
}

/// Jobs sent together and answered one by one.
pub struct Batch {
    jobs: Vec<Job>,
    assigned: Vec<Option<Assignment>>,
    done: Vec<Option<Done>>,
}

impl Batch {
    /// Number of jobs.
    pub fn len(&self) -> usize {
        self.jobs.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.jobs.is_empty()
    }
}

/// The pool's limits.
#[derive(Clone, Copy, Debug)]
pub struct PoolSettings {
    /// How long a worker has to answer a task.
    pub step_timeout: Duration,
    /// How long to wait for workers to join: at the start, and when too few remain.
    pub join_timeout: Duration,
    /// The run goes on while at least this many workers remain.
    pub min_workers: usize,
}

/// The admitted workers and the run's membership history.
pub struct WorkerPool {
    handle: Handle,
    members: Vec<Member>,
    events: mpsc::Receiver<Event>,
    ranks: RankTable,
    settings: PoolSettings,
    next_task: u64,
    free_slots: VecDeque<u32>,
    membership: Vec<MembershipEvent>,
    /// Optimizer steps completed, for the membership events.
    step: u64,
    /// Whether workers that join mid-run may take part (not in NCCL runs, whose communicator
    /// is formed once).
    elastic: bool,
    on_lost: Option<OnLost>,
    /// Whether lost workers are replaced, so a process exit before the start is no failure.
    replaces: bool,
    stop: StopFlag,
    /// Messages that arrived while nothing was waiting for them (answers to tasks sent ahead),
    /// kept for the next wait.
    backlog: VecDeque<Event>,
    /// Tasks sent and neither answered nor given up: an answer to one of these that the
    /// current wait does not want is kept for the wait that does.
    in_flight: HashSet<u64>,
}

/// Builds the messages that bring a worker up to date.
pub type Sync<'a> = &'a dyn Fn(&Member) -> Vec<coordinator_message::Body>;

impl WorkerPool {
    /// A pool fed by `events`, with `slots` gradient slots in the shared file.
    pub fn new(
        handle: Handle,
        events: mpsc::Receiver<Event>,
        ranks: RankTable,
        settings: PoolSettings,
        slots: usize,
        stop: StopFlag,
    ) -> Self {
        WorkerPool {
            handle,
            members: Vec::new(),
            events,
            ranks,
            settings,
            next_task: 0,
            free_slots: (0..slots as u32).collect(),
            membership: Vec::new(),
            step: 0,
            elastic: true,
            on_lost: None,
            replaces: false,
            stop,
            backlog: VecDeque::new(),
            in_flight: HashSet::new(),
        }
    }

    /// Calls `on_lost` with the process id of every worker declared lost; `replaces` says
    /// whether it starts replacements.
    pub fn on_lost(&mut self, on_lost: OnLost, replaces: bool) {
        self.on_lost = Some(on_lost);
        self.replaces = replaces;
    }

    /// Keeps workers that join mid-run waiting instead of admitting them (NCCL runs).
    pub fn set_elastic(&mut self, elastic: bool) {
        self.elastic = elastic;
    }

    /// Records that `steps` optimizer steps are complete (membership events name the step).
    pub fn set_step(&mut self, steps: u64) {
        self.step = steps;
    }

    /// The members, ordered by rank (ready or not).
    pub fn members(&self) -> &[Member] {
        &self.members
    }

    /// Indices of the members that hold the state and take tasks.
    pub fn ready(&self) -> Vec<usize> {
        (0..self.members.len())
            .filter(|&i| self.members[i].ready)
            .collect()
    }

    /// Workers joining and lost so far.
    pub fn membership(&self) -> &[MembershipEvent] {
        &self.membership
    }

    fn wait_event(&mut self, deadline: Instant) -> Option<Event> {
        if let Some(event) = self.backlog.pop_front() {
            return Some(event);
        }
        let events = &mut self.events;
        self.handle.block_on(async {
            tokio::time::timeout_at(deadline.into(), events.recv())
                .await
                .ok()
                .flatten()
        })
    }

    /// Adds a joined worker (not yet ready); returns its index.
    fn admit(&mut self, link: WorkerLink) -> usize {
        let slots = match link.shm {
            true => (0..SLOTS_PER_WORKER)
                .filter_map(|_| self.free_slots.pop_front())
                .collect(),
            false => Vec::new(),
        };
        self.membership.push(MembershipEvent {
            step: self.step,
            rank: link.rank,
            peer: link.peer.clone(),
            event: Membership::Joined,
            cause: "joined".into(),
        });
        let member = Member {
            session: link.session,
            rank: link.rank,
            peer: link.peer,
            join: link.join,
            shm: link.shm,
            ready: false,
            slots,
            held: Vec::new(),
            tx: link.to_worker,
        };
        let at = self.members.partition_point(|m| m.rank < member.rank);
        self.members.insert(at, member);
        at
    }

    fn index_of(&self, session: u64) -> Option<usize> {
        self.members.iter().position(|m| m.session == session)
    }

    /// Sends worker `w` the messages that bring it up to date and lets it take tasks; a worker
    /// that cannot take them is lost.
    pub fn make_ready(&mut self, w: usize, sync: Sync<'_>) {
        let session = self.members[w].session;
        for body in sync(&self.members[w]) {
            if let Err(why) = self.send(w, body) {
                self.lose(session, why);
                return;
            }
        }
        self.members[w].ready = true;
    }

    /// Brings every member that joined since the last call up to date, in an elastic pool.
    pub fn ready_joiners(&mut self, sync: Sync<'_>) {
        self.drain_events();
        if self.elastic {
            self.ready_all(sync);
        }
    }

    /// Marks every member out of date, so that the next [`WorkerPool::ready_all`] brings all of
    /// them to a state the trainer loaded (not the one they stepped to).
    pub fn unready_all(&mut self) {
        self.members.iter_mut().for_each(|m| m.ready = false);
    }

    /// Brings every member that is not yet up to date.
    pub fn ready_all(&mut self, sync: Sync<'_>) {
        let mut w = 0;
        while w < self.members.len() {
            let session = self.members[w].session;
            if !self.members[w].ready {
                self.make_ready(w, sync);
            }
            // make_ready may have removed it.
            if self.members.get(w).is_some_and(|m| m.session == session) {
                w += 1;
            }
        }
    }

    /// Takes the events already queued without waiting: joins and ended sessions; messages
    /// stay queued for whoever waits next.
    fn drain_events(&mut self) {
        let queued: Vec<Event> = self.backlog.drain(..).collect();
        for event in queued {
            self.handle_idle(event);
        }
        while let Ok(event) = self.events.try_recv() {
            self.handle_idle(event);
        }
    }

    /// An event outside a collection: a join is admitted, an ended session lost, a message
    /// (the answer to a task sent ahead) kept for the next wait.
    fn handle_idle(&mut self, event: Event) {
        match event {
            Event::Joined(link) => {
                self.admit(link);
            }
            Event::Ended { session, why } => self.lose(session, why),
            Event::ProcessExited(what) => tracing::warn!(%what, "a local worker process exited"),
            message @ Event::Message { .. } => self.backlog.push_back(message),
        }
    }

    /// Waits until `count` workers have joined (not yet brought up to date), within the join
    /// timeout; a raised stop flag ends the wait, and so does a local worker process that
    /// exits (unless lost workers are replaced).
    pub fn await_members(&mut self, count: usize) -> Result<(), ClusterError> {
        let deadline = Instant::now() + self.settings.join_timeout;
        loop {
            self.drain_events();
            if self.members.len() >= count {
                return Ok(());
            }
            if self.stop.requested() {
                return Err(ClusterError::Interrupted);
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(ClusterError::Timeout {
                    what: format!("{count} workers to join ({} joined)", self.members.len()),
                    secs: self.settings.join_timeout.as_secs(),
                });
            }
            // Wake up now and then to look at the stop flag.
            let tick = (now + Duration::from_millis(200)).min(deadline);
            match self.wait_event(tick) {
                Some(Event::ProcessExited(what)) if !self.replaces => {
                    return Err(ClusterError::Setup(format!(
                        "{what} exited before all workers joined (its log above says why)"
                    )));
                }
                Some(event) => self.handle_idle(event),
                None => {}
            }
        }
    }

    /// Queues `body` for worker `w` without waiting past the step timeout.
    pub fn send(&self, w: usize, body: coordinator_message::Body) -> Result<(), String> {
        self.send_message(w, Some(body), Vec::new())
    }

    /// Queues a message of `body` and `tasks` for worker `w` without waiting past the step
    /// timeout.
    fn send_message(
        &self,
        w: usize,
        body: Option<coordinator_message::Body>,
        tasks: Vec<Task>,
    ) -> Result<(), String> {
        let msg: Result<CoordinatorMessage, Status> = Ok(CoordinatorMessage { body, tasks });
        // The channel's own path first: entering the runtime costs more than a free slot.
        match self.members[w].tx.try_send(msg) {
            Ok(()) => Ok(()),
            // tonic drops a response stream whose connection is gone, before the worker's
            // inbound side reports it: this is how a killed worker is often seen first.
            Err(TrySendError::Closed(_)) => Err(STREAM_CLOSED.into()),
            Err(TrySendError::Full(msg)) => {
                let tx = &self.members[w].tx;
                let limit = self.settings.step_timeout;
                self.handle
                    .block_on(async { tx.send_timeout(msg, limit).await })
                    .map_err(|e| match e {
                        SendTimeoutError::Timeout(_) => {
                            format!("it read none of its messages for {} s", limit.as_secs())
                        }
                        SendTimeoutError::Closed(_) => STREAM_CLOSED.into(),
                    })
            }
        }
    }

    /// Sends every ready member what `body` makes for it, with the tasks held for it; those
    /// that cannot take it are lost.
    pub fn broadcast(&mut self, mut body: impl FnMut(&Member) -> coordinator_message::Body) {
        self.send_each(|m| {
            m.ready
                .then(|| (Some(body(m)), std::mem::take(&mut m.held)))
        });
    }

    /// Sends each member the message `message` makes for it (`None`: nothing); those that
    /// cannot take it are lost.
    fn send_each(
        &mut self,
        mut message: impl FnMut(&mut Member) -> Option<(Option<coordinator_message::Body>, Vec<Task>)>,
    ) {
        let mut w = 0;
        while w < self.members.len() {
            let Some((body, tasks)) = message(&mut self.members[w]) else {
                w += 1;
                continue;
            };
            match self.send_message(w, body, tasks) {
                Ok(()) => w += 1,
                Err(why) => {
                    let session = self.members[w].session;
                    self.lose(session, why);
                }
            }
        }
    }

    /// Declares a session lost: closes it, frees its rank, burns its slots, records why, and
    /// starts a replacement when asked to. Its unanswered tasks are the caller's to reassign.
    pub fn lose(&mut self, session: u64, why: String) {
        let Some(w) = self.index_of(session) else {
            return;
        };
        let m = self.members.remove(w);
        tracing::warn!(rank = m.rank, peer = %m.peer, %why, "worker lost");
        self.ranks.release(m.rank, m.session);
        self.membership.push(MembershipEvent {
            step: self.step,
            rank: m.rank,
            peer: m.peer,
            event: Membership::Lost,
            cause: why,
        });
        // Dropping the sender ends the worker's stream: it reconnects as a new session, if
        // it can.
        drop(m.tx);
        if let Some(on_lost) = &self.on_lost {
            let mut act = on_lost.lock().unwrap_or_else(|e| e.into_inner());
            if let Err(e) = act(m.join.pid) {
                tracing::warn!("replacing a lost worker: {e}");
            }
        }
    }

    /// The next message of any member within `deadline` (joins and ended sessions are handled
    /// on the way, joiners made ready only when the pool is elastic); `None` at the deadline. A
    /// worker's report of its own failure is its error.
    pub fn next_message(
        &mut self,
        deadline: Instant,
        sync: Sync<'_>,
    ) -> Result<Option<(u64, worker_message::Body)>, ClusterError> {
        loop {
            let Some(event) = self.wait_event(deadline) else {
                return Ok(None);
            };
            match event {
                Event::Joined(link) => {
                    let w = self.admit(link);
                    if self.elastic {
                        self.make_ready(w, sync);
                    }
                }
                Event::Ended { session, why } => self.lose(session, why),
                Event::ProcessExited(what) => {
                    tracing::warn!(%what, "a local worker process exited");
                }
                Event::Message {
                    session, message, ..
                } => {
                    let Some(w) = self.index_of(session) else {
                        continue;
                    };
                    match message.body {
                        Some(worker_message::Body::Error(e)) => {
                            return Err(ClusterError::WorkerFailed {
                                rank: self.members[w].rank,
                                peer: self.members[w].peer.clone(),
                                message: e.message,
                            });
                        }
                        Some(body) => return Ok(Some((session, body))),
                        None => {}
                    }
                }
            }
        }
    }

    /// The member index of `session`, if it is still a member.
    pub fn member(&self, session: u64) -> Option<usize> {
        self.index_of(session)
    }

    /// Declares every member lost (their sessions end; they may come back as new ones).
    pub fn lose_all(&mut self, why: &str) {
        let sessions: Vec<u64> = self.members.iter().map(|m| m.session).collect();
        for session in sessions {
            self.lose(session, why.to_string());
        }
    }

    /// Ends every session with Stop; `failed` says the run failed.
    pub fn stop_all(&mut self, reason: &str, failed: bool) {
        for w in 0..self.members.len() {
            let _ = self.send(
                w,
                coordinator_message::Body::Stop(Stop {
                    reason: reason.into(),
                    failed,
                }),
            );
        }
    }

    /// Sends the tasks still held back, each member's in one message.
    pub fn release_tasks(&mut self) {
        self.send_each(|m| {
            let tasks = std::mem::take(&mut m.held);
            (!tasks.is_empty()).then_some((None, tasks))
        });
    }

    /// The shared-file slot for the `k`-th gradient task this batch gives worker `w`.
    fn slot(&self, w: usize, k: usize) -> Option<u32> {
        self.members[w].slots.get(k).copied()
    }

    /// Sends `jobs[i]` to the ready member `assign[i]` (an index into [`WorkerPool::ready`]);
    /// a job whose member cannot take it goes to another.
    pub fn send_jobs(&mut self, jobs: Vec<Job>, assign: &[usize]) -> Batch {
        self.place(jobs, assign, false)
    }

    /// As [`WorkerPool::send_jobs`], but the tasks are held back for the next
    /// [`WorkerPool::broadcast`] to carry in its messages: one message a step instead of the
    /// payload and the tasks apart.
    pub fn hold_jobs(&mut self, jobs: Vec<Job>, assign: &[usize]) -> Batch {
        self.place(jobs, assign, true)
    }

    /// Gives `jobs[i]` to the ready member `assign[i]`, sent at once or `held`.
    fn place(&mut self, jobs: Vec<Job>, assign: &[usize], held: bool) -> Batch {
        let mut batch = Batch {
            assigned: vec![None; jobs.len()],
            done: jobs.iter().map(|_| None).collect(),
            jobs,
        };
        let ready = self.ready();
        let sessions: Vec<u64> = ready.iter().map(|&w| self.members[w].session).collect();
        for (i, &r) in assign.iter().enumerate().take(batch.len()) {
            if let Some(&session) = sessions.get(r) {
                self.dispatch(&mut batch, i, session, held);
            }
        }
        batch
    }

    /// Sends job `i` to `session` (or, `held`, keeps it for the member's next message); when
    /// that fails the session is lost and the job stays unassigned for [`WorkerPool::collect`]
    /// to place.
    fn dispatch(&mut self, batch: &mut Batch, i: usize, session: u64, held: bool) {
        let Some(w) = self.index_of(session) else {
            return;
        };
        let id = self.next_task;
        self.next_task += 1;
        let mut kind = batch.jobs[i].kind.clone();
        let mut slot = None;
        if let task::Kind::Gradient(g) = &mut kind {
            let given = batch
                .assigned
                .iter()
                .flatten()
                .filter(|a| a.session == session && a.slot.is_some())
                .count();
            slot = self.slot(w, given);
            g.shm_slot = slot;
        }
        let task = Task {
            id,
            weights_version: batch.jobs[i].version,
            kind: Some(kind),
        };
        let sent = match held {
            true => {
                self.members[w].held.push(task);
                Ok(())
            }
            false => self.send(w, coordinator_message::Body::Task(task)),
        };
        match sent {
            Ok(()) => {
                self.in_flight.insert(id);
                batch.assigned[i] = Some(Assignment {
                    task: id,
                    session,
                    slot,
                    sent: Instant::now(),
                })
            }
            Err(why) => self.lose(session, why),
        }
    }

    /// Places every unanswered job whose member is gone on the ready member with the fewest
    /// unanswered jobs.
    fn reassign(&mut self, batch: &mut Batch) {
        for i in 0..batch.len() {
            if batch.done[i].is_some() {
                continue;
            }
            let alive = batch.assigned[i].is_some_and(|a| self.index_of(a.session).is_some());
            if alive {
                continue;
            }
            if let Some(a) = batch.assigned[i].take() {
                self.in_flight.remove(&a.task);
            }
            let load = |session: u64| {
                batch
                    .assigned
                    .iter()
                    .zip(&batch.done)
                    .filter(|(a, d)| d.is_none() && a.is_some_and(|a| a.session == session))
                    .count()
            };
            let target = self
                .ready()
                .into_iter()
                .map(|w| self.members[w].session)
                .min_by_key(|&s| load(s));
            if let Some(session) = target {
                self.dispatch(batch, i, session, false);
            }
        }
    }

    /// Gives up the unanswered tasks of a batch that will not be collected (work sent ahead for
    /// a step that is not coming); their answers, if any, are dropped.
    pub fn abandon(&mut self, batch: Batch) {
        for a in batch.assigned.iter().zip(&batch.done) {
            if let (Some(a), None) = a {
                self.in_flight.remove(&a.task);
            }
        }
    }

    /// Waits for every job's answer. A lost worker's jobs go to the others; when too few
    /// workers remain, the wait is for joiners (brought up to date with `sync`) up to the join
    /// timeout. `movable` says whether a job may move to another worker (not in NCCL steps,
    /// where a lost rank stops the step). Answers come back in job order.
    pub fn collect(
        &mut self,
        mut batch: Batch,
        sync: Sync<'_>,
        movable: bool,
    ) -> Result<Vec<Done>, ClusterError> {
        // A wait for answers to tasks not yet sent would last until the step timeout.
        self.release_tasks();
        let started = Instant::now();
        let mut short_since: Option<Instant> = None;
        // Answers to other batches' tasks (sent ahead): kept for their own wait.
        let mut deferred: Vec<Event> = Vec::new();
        let result = self.collect_into(
            &mut batch,
            sync,
            movable,
            started,
            &mut short_since,
            &mut deferred,
        );
        for event in deferred.into_iter().rev() {
            self.backlog.push_front(event);
        }
        result?;
        Ok(batch.done.into_iter().flatten().collect())
    }

    fn collect_into(
        &mut self,
        batch: &mut Batch,
        sync: Sync<'_>,
        movable: bool,
        started: Instant,
        short_since: &mut Option<Instant>,
        deferred: &mut Vec<Event>,
    ) -> Result<(), ClusterError> {
        loop {
            if movable {
                self.reassign(batch);
            } else if let Some(i) = (0..batch.len()).find(|&i| {
                batch.done[i].is_none()
                    && batch.assigned[i].is_none_or(|a| self.index_of(a.session).is_none())
            }) {
                let what = format!("task {i} of a step that every rank must take part in");
                return Err(ClusterError::RankLost { what });
            }
            if batch.done.iter().all(Option::is_some) {
                return Ok(());
            }
            let ready = self.ready().len();
            let unplaced = batch
                .assigned
                .iter()
                .zip(&batch.done)
                .any(|(a, d)| d.is_none() && a.is_none());
            let now = Instant::now();
            let mut deadline = now + self.settings.step_timeout;
            if ready < self.settings.min_workers.max(1) || unplaced {
                let since = *short_since.get_or_insert(now);
                let until = since + self.settings.join_timeout;
                if now >= until {
                    let last_lost = self
                        .membership
                        .iter()
                        .rev()
                        .find(|e| e.event == Membership::Lost)
                        .map_or_else(
                            || "none".into(),
                            |e| format!("worker {} ({}): {}", e.rank, e.peer, e.cause),
                        );
                    return Err(ClusterError::TooFewWorkers {
                        left: ready,
                        min: self.settings.min_workers.max(1),
                        secs: self.settings.join_timeout.as_secs(),
                        last_lost,
                    });
                }
                // A preempted run waiting for replacements stops now, not after the join
                // timeout: this step was not applied, so the trainer checkpoints the state
                // before it.
                if self.stop.requested() {
                    return Err(ClusterError::Interrupted);
                }
                deadline = deadline.min(until).min(now + Duration::from_millis(200));
            } else {
                *short_since = None;
            }
            // The oldest unanswered job sets the deadline; one sent ahead counts from now.
            for (a, d) in batch.assigned.iter().zip(&batch.done) {
                if let (Some(a), None) = (a, d) {
                    deadline = deadline.min(a.sent.max(started) + self.settings.step_timeout);
                }
            }
            match self.wait_event(deadline) {
                None => self.lose_late(batch, started),
                Some(Event::Joined(link)) => {
                    let w = self.admit(link);
                    if self.elastic {
                        self.make_ready(w, sync);
                    }
                }
                Some(Event::Ended { session, why }) => self.lose(session, why),
                Some(Event::ProcessExited(what)) => {
                    tracing::warn!(%what, "a local worker process exited");
                }
                Some(Event::Message {
                    session,
                    at,
                    message,
                }) => {
                    if let Some(other) = self.answer(batch, session, at, message, started)? {
                        deferred.push(other);
                    }
                }
            }
        }
    }

    /// Declares lost every worker whose oldest unanswered job is past the step timeout.
    fn lose_late(&mut self, batch: &Batch, started: Instant) {
        let now = Instant::now();
        let limit = self.settings.step_timeout;
        let late: Vec<(u64, u64)> = batch
            .assigned
            .iter()
            .zip(&batch.done)
            .filter_map(|(a, d)| match (a, d) {
                (Some(a), None) if now >= a.sent.max(started) + limit => Some((a.session, a.task)),
                _ => None,
            })
            .collect();
        for (session, task) in late {
            let why = format!("no answer to task {task} within {} s", limit.as_secs());
            self.lose(session, why);
        }
    }

    /// Files an answer under its job. An answer to another batch's task still in flight is
    /// handed back (to keep for that batch's wait); one from a lost session, or to a task
    /// answered or moved elsewhere, is dropped.
    fn answer(
        &mut self,
        batch: &mut Batch,
        session: u64,
        at: Instant,
        message: crate::cluster::protocol::proto::WorkerMessage,
        started: Instant,
    ) -> Result<Option<Event>, ClusterError> {
        let Some(w) = self.index_of(session) else {
            tracing::debug!(session, "dropped a late answer from a lost worker");
            return Ok(None);
        };
        let (rank, peer) = (self.members[w].rank, self.members[w].peer.clone());
        let body = match message.body {
            Some(worker_message::Body::Error(e)) => {
                return Err(ClusterError::WorkerFailed {
                    rank,
                    peer,
                    message: e.message,
                });
            }
            Some(body) => body,
            None => {
                return Err(ClusterError::Protocol {
                    peer,
                    what: "an empty message".into(),
                });
            }
        };
        let Some(id) = answer_id(&body) else {
            return Err(ClusterError::Protocol {
                peer,
                what: "a message that answers no task".into(),
            });
        };
        let found = batch.assigned.iter().enumerate().find_map(|(i, a)| {
            a.filter(|a| a.task == id && a.session == session)
                .map(|a| (i, a))
        });
        let Some((i, a)) = found else {
            if id >= self.next_task {
                // A task never sent: the worker lies or is broken. It leaves the run; its
                // tasks go to the others.
                self.lose(
                    session,
                    format!("it answered task {id}, which was never sent"),
                );
                return Ok(None);
            }
            if self.in_flight.contains(&id) {
                return Ok(Some(Event::Message {
                    session,
                    at,
                    message: crate::cluster::protocol::proto::WorkerMessage { body: Some(body) },
                }));
            }
            tracing::debug!(session, id, "dropped an answer to a task not in flight");
            return Ok(None);
        };
        self.in_flight.remove(&id);
        batch.done[i] = Some(Done {
            at,
            started: a.sent.max(started),
            body,
            rank,
            peer,
            slot: a.slot,
            session,
        });
        Ok(None)
    }
}

/// The task id an answer names.
fn answer_id(body: &worker_message::Body) -> Option<u64> {
    match body {
        worker_message::Body::Gradient(r) => Some(r.id),
        worker_message::Body::Embedding(r) => Some(r.id),
        worker_message::Body::Digest(r) => Some(r.id),
        worker_message::Body::State(r) => Some(r.id),
        _ => None,
    }
}
