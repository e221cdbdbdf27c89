//! Property tests of the block pool, the KV cache manager and the scheduler: after any
//! sequence of allocate / append / free / preempt / prefix hit, no block is leaked or
//! freed twice, every ref count equals the number of block tables holding the block
//! (and returns to zero at the end), and every token a sequence reads back from its block
//! table is the one it (or the prefix it shares) wrote.
//!
//! The last point is checked with a "shadow KV cache": one `u64` per slot holding a
//! hash of the whole token prefix whose K/V the slot stores. Writing a slot stands in
//! for the forward pass; reading the computed slots of a block table before each step
//! stands in for attention. A prefix hit on an evicted-and-reused block, a block handed
//! to two sequences, or a stale table after preemption all show up as a wrong slot.

use engine_scheduler::{
    blocks_for, AdmissionError, BlockId, BlockPool, BlockPoolError, KvCacheManager, NewToken,
    SamplingParams, Scheduler, SchedulerConfig, SchedulerOutput, SeqId, SeqStatus, Sequence,
};
use proptest::prelude::*;
use std::collections::{HashMap, VecDeque};

/// Hash of `tokens[..=pos]`: what the slot at position `pos` of a sequence holds.
fn prefix_hash(tokens: &[u32], pos: usize) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &t in &tokens[..=pos] {
        h ^= u64::from(t) + 1;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// One `Option<u64>` per KV slot (`num_blocks * block_size`).
struct ShadowKv {
    slots: Vec<Option<u64>>,
    block_size: usize,
}

impl ShadowKv {
    fn new(num_blocks: usize, block_size: usize) -> Self {
        Self {
            slots: vec![None; num_blocks * block_size],
            block_size,
        }
    }

    fn slot(&self, table: &[BlockId], pos: usize) -> Result<usize, String> {
        let b = table
            .get(pos / self.block_size)
            .ok_or_else(|| format!("position {pos} is beyond the block table {table:?}"))?;
        Ok(*b as usize * self.block_size + pos % self.block_size)
    }

    /// "Attention": positions `0..n` must hold this sequence's prefixes.
    fn check_read(&self, table: &[BlockId], tokens: &[u32], n: usize) -> Result<(), String> {
        for pos in 0..n {
            let s = self.slot(table, pos)?;
            if self.slots[s] != Some(prefix_hash(tokens, pos)) {
                return Err(format!(
                    "position {pos} (slot {s}) of {tokens:?} with table {table:?} holds {:?}",
                    self.slots[s]
                ));
            }
        }
        Ok(())
    }

    /// "Forward": write positions `start..end`.
    fn write(
        &mut self,
        table: &[BlockId],
        tokens: &[u32],
        start: usize,
        end: usize,
    ) -> Result<(), String> {
        for pos in start..end {
            let s = self.slot(table, pos)?;
            self.slots[s] = Some(prefix_hash(tokens, pos));
        }
        Ok(())
    }
}

/// Blocks shared by two tables sit at the same index and the two token lists agree up to
/// that block's end (only a prefix hit may share a block).
fn check_sharing(tables: &[(Vec<BlockId>, &[u32])], block_size: usize) -> Result<(), String> {
    let mut seen: HashMap<BlockId, (usize, usize)> = HashMap::new();
    for (t, (table, tokens)) in tables.iter().enumerate() {
        for (i, &b) in table.iter().enumerate() {
            if let Some(&(t0, i0)) = seen.get(&b) {
                let end = (i + 1) * block_size;
                let other = tables[t0].1;
                if i0 != i
                    || tokens.len() < end
                    || other.len() < end
                    || tokens[..end] != other[..end]
                {
                    return Err(format!(
                        "block {b} shared by tables {t0} (index {i0}) and {t} (index {i}) without a common prefix"
                    ));
                }
            } else {
                seen.insert(b, (t, i));
            }
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// BlockPool against a reference model (ref counts, LRU free queue, hash map).
// ---------------------------------------------------------------------------------------

#[derive(Debug, Clone)]
enum PoolOp {
    Get(usize),
    Free(usize),
    Touch(usize),
    Cache(usize, u64),
    DoubleFree(usize),
}

fn pool_op() -> impl Strategy<Value = PoolOp> {
    prop_oneof![
        3 => (0usize..5).prop_map(PoolOp::Get),
        3 => any::<usize>().prop_map(PoolOp::Free),
        2 => any::<usize>().prop_map(PoolOp::Touch),
        3 => (any::<usize>(), 0u64..12).prop_map(|(i, h)| PoolOp::Cache(i, h)),
        1 => any::<usize>().prop_map(PoolOp::DoubleFree),
    ]
}

struct PoolModel {
    refs: Vec<u32>,
    queue: VecDeque<BlockId>,
    hash_of: Vec<Option<u64>>,
    cached: HashMap<u64, BlockId>,
    holders: Vec<Vec<BlockId>>,
}

impl PoolModel {
    fn new(n: usize) -> Self {
        Self {
            refs: vec![0; n],
            queue: (0..n as BlockId).collect(),
            hash_of: vec![None; n],
            cached: HashMap::new(),
            holders: Vec::new(),
        }
    }

    fn apply(&mut self, pool: &mut BlockPool, op: &PoolOp) -> Result<(), TestCaseError> {
        match *op {
            PoolOp::Get(n) => {
                let got = pool.get_new_blocks(n);
                if n > self.queue.len() {
                    prop_assert!(got.is_none(), "get {n} with {} free", self.queue.len());
                    return Ok(());
                }
                let got = got.ok_or_else(|| TestCaseError::fail("get_new_blocks failed"))?;
                let expected: Vec<BlockId> = self.queue.drain(..n).collect();
                prop_assert_eq!(&got, &expected, "LRU order");
                for &b in &got {
                    prop_assert_eq!(self.refs[b as usize], 0);
                    self.refs[b as usize] = 1;
                    if let Some(h) = self.hash_of[b as usize].take() {
                        self.cached.remove(&h);
                    }
                }
                self.holders.push(got);
            }
            PoolOp::Free(i) if !self.holders.is_empty() => {
                let held = self.holders.swap_remove(i % self.holders.len());
                let rev: Vec<BlockId> = held.iter().rev().copied().collect();
                prop_assert_eq!(pool.free_blocks(&rev), Ok(()));
                for b in rev {
                    self.refs[b as usize] -= 1;
                    if self.refs[b as usize] == 0 {
                        self.queue.push_back(b);
                    }
                }
            }
            PoolOp::Touch(i) if !self.cached.is_empty() => {
                let mut hashes: Vec<u64> = self.cached.keys().copied().collect();
                hashes.sort_unstable();
                let h = hashes[i % hashes.len()];
                let b = self.cached[&h];
                prop_assert_eq!(pool.get_cached_block(h), Some(b));
                pool.touch(&[b]);
                if self.refs[b as usize] == 0 {
                    self.queue.retain(|&q| q != b);
                }
                self.refs[b as usize] += 1;
                self.holders.push(vec![b]);
            }
            PoolOp::Cache(i, h) if !self.holders.is_empty() => {
                let held = &self.holders[i % self.holders.len()];
                if let Some(&b) = held.get(i % held.len().max(1)) {
                    pool.cache_block(b, h);
                    if self.hash_of[b as usize].is_none() && !self.cached.contains_key(&h) {
                        self.hash_of[b as usize] = Some(h);
                        self.cached.insert(h, b);
                    }
                }
            }
            PoolOp::DoubleFree(i) if !self.queue.is_empty() => {
                let b = self.queue[i % self.queue.len()];
                prop_assert_eq!(pool.free_blocks(&[b]), Err(BlockPoolError::DoubleFree(b)));
            }
            _ => {}
        }
        Ok(())
    }

    fn check(&self, pool: &BlockPool) -> Result<(), TestCaseError> {
        pool.check_invariants().map_err(TestCaseError::fail)?;
        prop_assert_eq!(pool.num_free(), self.queue.len());
        prop_assert_eq!(pool.num_cached(), self.cached.len());
        for (b, &r) in self.refs.iter().enumerate() {
            prop_assert_eq!(pool.ref_count(b as BlockId), r, "block {}", b);
        }
        for (&h, &b) in &self.cached {
            prop_assert_eq!(pool.get_cached_block(h), Some(b));
        }
        Ok(())
    }
}

/// `cases` cases; failures are printed (minimized), not persisted to files.
fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config(2048))]

    #[test]
    fn block_pool_matches_reference_model(
        num_blocks in 1usize..12,
        ops in prop::collection::vec(pool_op(), 1..80),
    ) {
        let mut pool = BlockPool::new(num_blocks);
        let mut model = PoolModel::new(num_blocks);
        for op in &ops {
            model.apply(&mut pool, op)?;
            model.check(&pool)?;
        }
        while !model.holders.is_empty() {
            model.apply(&mut pool, &PoolOp::Free(0))?;
            model.check(&pool)?;
        }
        prop_assert_eq!(pool.num_free(), num_blocks);
        for b in 0..num_blocks {
            prop_assert_eq!(pool.ref_count(b as BlockId), 0);
        }
    }
}

// ---------------------------------------------------------------------------------------
// KvCacheManager: allocate (with prefix hits) / compute / append / free / preempt.
// ---------------------------------------------------------------------------------------

#[derive(Debug, Clone)]
enum KvOp {
    /// Compute up to `n` more tokens of slot `r` (allocating; a prefix lookup first when
    /// the slot holds no blocks). A fully computed slot first appends a sampled token.
    Step { r: usize, n: usize, sampled: u32 },
    /// Free the slot's blocks (finish or preempt); it recomputes on its next step.
    Free { r: usize },
    /// Free and give the slot a new prompt: a shared base prefix plus a suffix.
    NewPrompt {
        r: usize,
        base: usize,
        len: usize,
        suffix: Vec<u32>,
    },
}

const NUM_SLOTS: usize = 5;

fn bases() -> [Vec<u32>; 3] {
    [
        (0..32).map(|i| (i % 3) as u32).collect(),
        (0..32).map(|i| ((i / 2) % 2) as u32).collect(),
        vec![7; 32],
    ]
}

fn kv_op() -> impl Strategy<Value = KvOp> {
    prop_oneof![
        6 => (0..NUM_SLOTS, 1usize..10, 0u32..3).prop_map(|(r, n, sampled)| KvOp::Step { r, n, sampled }),
        1 => (0..NUM_SLOTS).prop_map(|r| KvOp::Free { r }),
        2 => (0..NUM_SLOTS, 0usize..3, 0usize..24, prop::collection::vec(0u32..3, 0..4))
            .prop_map(|(r, base, len, suffix)| KvOp::NewPrompt { r, base, len, suffix }),
    ]
}

#[derive(Debug, Clone, Default)]
struct Req {
    id: SeqId,
    tokens: Vec<u32>,
    computed: usize,
    live: bool,
}

struct KvHarness {
    m: KvCacheManager,
    shadow: ShadowKv,
    reqs: Vec<Req>,
    next_id: SeqId,
    hits: usize,
}

impl KvHarness {
    fn new(num_blocks: usize, block_size: usize, caching: bool) -> Self {
        let reqs = (0..NUM_SLOTS)
            .map(|r| Req {
                id: r as SeqId,
                tokens: bases()[r % 3][..3 + 5 * r].to_vec(),
                ..Req::default()
            })
            .collect();
        Self {
            m: KvCacheManager::new(num_blocks, block_size, caching),
            shadow: ShadowKv::new(num_blocks, block_size),
            reqs,
            next_id: NUM_SLOTS as SeqId,
            hits: 0,
        }
    }

    fn free(&mut self, r: usize) -> Result<(), TestCaseError> {
        let req = &mut self.reqs[r];
        prop_assert_eq!(self.m.free(req.id), Ok(()));
        prop_assert!(self.m.block_table(req.id).is_empty());
        req.live = false;
        req.computed = 0;
        Ok(())
    }

    fn apply(&mut self, op: &KvOp) -> Result<(), TestCaseError> {
        let bs = self.m.block_size();
        match op {
            KvOp::Free { r } => self.free(*r)?,
            KvOp::NewPrompt {
                r,
                base,
                len,
                suffix,
            } => {
                self.free(*r)?;
                let mut tokens = bases()[*base][..*len].to_vec();
                tokens.extend(suffix);
                if tokens.is_empty() {
                    tokens.push(1);
                }
                self.reqs[*r] = Req {
                    id: self.next_id,
                    tokens,
                    ..Req::default()
                };
                self.next_id += 1;
            }
            KvOp::Step { r, n, sampled } => {
                let req = &mut self.reqs[*r];
                if req.live && req.computed == req.tokens.len() {
                    req.tokens.push(*sampled);
                }
                let hits = if req.live {
                    Vec::new()
                } else {
                    let (hits, cached) = self.m.get_computed_blocks(&req.tokens);
                    prop_assert_eq!(cached, hits.len() * bs);
                    prop_assert!(
                        cached < req.tokens.len(),
                        "a hit must leave a token to compute"
                    );
                    // The hit blocks hold exactly this prompt's prefix.
                    self.shadow
                        .check_read(&hits, &req.tokens, cached)
                        .map_err(TestCaseError::fail)?;
                    req.computed = cached;
                    hits
                };
                let take = (*n).min(req.tokens.len() - req.computed);
                let total = req.computed + take;
                let free_before = self.m.pool().num_free();
                let before = self.m.block_table(req.id).to_vec();
                match self.m.allocate_slots(req.id, total, &hits) {
                    None => {
                        prop_assert_eq!(
                            self.m.pool().num_free(),
                            free_before,
                            "failed allocation took blocks"
                        );
                        prop_assert_eq!(self.m.block_table(req.id), before.as_slice());
                        if !req.live {
                            req.computed = 0;
                        }
                    }
                    Some(()) => {
                        self.hits += hits.len();
                        let table = self.m.block_table(req.id).to_vec();
                        prop_assert_eq!(
                            table.len(),
                            blocks_for(total, bs).max(before.len() + hits.len())
                        );
                        prop_assert!(table.starts_with(&before));
                        prop_assert_eq!(
                            &table[before.len()..before.len() + hits.len()],
                            hits.as_slice()
                        );
                        self.shadow
                            .check_read(&table, &req.tokens, req.computed)
                            .map_err(TestCaseError::fail)?;
                        self.shadow
                            .write(&table, &req.tokens, req.computed, total)
                            .map_err(TestCaseError::fail)?;
                        req.computed = total;
                        req.live = true;
                        self.m.cache_full_blocks(req.id, &req.tokens, total);
                    }
                }
            }
        }
        Ok(())
    }

    fn check(&self) -> Result<(), TestCaseError> {
        self.m.check_invariants().map_err(TestCaseError::fail)?;
        let tables: Vec<(Vec<BlockId>, &[u32])> = self
            .reqs
            .iter()
            .map(|r| (self.m.block_table(r.id).to_vec(), r.tokens.as_slice()))
            .collect();
        check_sharing(&tables, self.m.block_size()).map_err(TestCaseError::fail)?;
        let mut held: Vec<BlockId> = tables.iter().flat_map(|(t, _)| t.iter().copied()).collect();
        held.sort_unstable();
        held.dedup();
        prop_assert_eq!(
            self.m.num_blocks_in_use(),
            held.len(),
            "blocks in use by no table (leak)"
        );
        Ok(())
    }
}

proptest! {
    #![proptest_config(config(2048))]

    #[test]
    fn kv_cache_manager_never_leaks_or_double_frees(
        num_blocks in 1usize..14,
        block_size in 1usize..5,
        caching in any::<bool>(),
        ops in prop::collection::vec(kv_op(), 1..120),
    ) {
        let mut h = KvHarness::new(num_blocks, block_size, caching);
        for op in &ops {
            h.apply(op)?;
            h.check()?;
        }
        for r in 0..NUM_SLOTS {
            h.free(r)?;
            h.check()?;
        }
        prop_assert_eq!(h.m.pool().num_free(), num_blocks);
        prop_assert_eq!(h.m.num_blocks_in_use(), 0);
        for b in 0..num_blocks {
            prop_assert_eq!(h.m.pool().ref_count(b as BlockId), 0);
        }
        if !caching {
            prop_assert_eq!(h.hits, 0);
        }
    }
}

/// The property harness does reach prefix hits (so the sharing checks are exercised).
#[test]
fn kv_harness_reaches_prefix_hits() {
    let mut h = KvHarness::new(12, 2, true);
    let ops = [
        KvOp::NewPrompt {
            r: 0,
            base: 0,
            len: 9,
            suffix: vec![],
        },
        KvOp::Step {
            r: 0,
            n: 9,
            sampled: 0,
        },
        KvOp::NewPrompt {
            r: 1,
            base: 0,
            len: 7,
            suffix: vec![2],
        },
        KvOp::Step {
            r: 1,
            n: 9,
            sampled: 0,
        },
    ];
    for op in &ops {
        h.apply(op).unwrap();
        h.check().unwrap();
    }
    assert_eq!(h.hits, 3, "tokens 0..6 of the shared base are reused");
    let (t0, t1) = (h.m.block_table(h.reqs[0].id), h.m.block_table(h.reqs[1].id));
    assert_eq!(t0[..3], t1[..3]);
    assert_eq!(h.m.pool().ref_count(t0[0]), 2);
}

// ---------------------------------------------------------------------------------------
// Scheduler: random add / schedule / update_from_output / abort with a tiny pool.
// ---------------------------------------------------------------------------------------

#[derive(Debug, Clone)]
enum SchedOp {
    Add {
        base: usize,
        len: usize,
        suffix: Vec<u32>,
        max_tokens: usize,
    },
    Step {
        seed: u64,
    },
    Abort {
        k: usize,
    },
}

fn sched_op() -> impl Strategy<Value = SchedOp> {
    prop_oneof![
        2 => (0usize..3, 0usize..20, prop::collection::vec(0u32..3, 0..3), 1usize..8)
            .prop_map(|(base, len, suffix, max_tokens)| SchedOp::Add { base, len, suffix, max_tokens }),
        6 => any::<u64>().prop_map(|seed| SchedOp::Step { seed }),
        1 => any::<usize>().prop_map(|k| SchedOp::Abort { k }),
    ]
}

fn sched_cfg() -> impl Strategy<Value = SchedulerConfig> {
    (1usize..6, 2usize..12, 1usize..5, 1usize..24, any::<bool>()).prop_map(
        |(max_num_seqs, num_blocks, block_size, max_num_batched_tokens, enable_prefix_caching)| {
            SchedulerConfig {
                max_num_seqs,
                max_num_batched_tokens,
                max_model_len: 40,
                block_size,
                num_blocks,
                enable_prefix_caching,
            }
        },
    )
}

struct SchedHarness {
    s: Scheduler,
    shadow: ShadowKv,
    next_id: SeqId,
    live: Vec<SeqId>,
    /// Finished requests: (max_tokens, output tokens, aborted).
    done: HashMap<SeqId, (usize, Vec<u32>, bool)>,
    max_tokens: HashMap<SeqId, usize>,
    num_preempted: usize,
    cached_tokens: usize,
    /// Overlap as the engine does: schedule step n+1 before step n's tokens are applied.
    overlap: bool,
    /// The launched step whose tokens are not applied yet (overlap only).
    in_flight: Option<(SchedulerOutput, Vec<NewToken>)>,
}

impl SchedHarness {
    fn new(cfg: SchedulerConfig) -> Self {
        let shadow = ShadowKv::new(cfg.num_blocks, cfg.block_size);
        Self {
            s: Scheduler::new(cfg),
            shadow,
            next_id: 0,
            live: Vec::new(),
            done: HashMap::new(),
            max_tokens: HashMap::new(),
            num_preempted: 0,
            cached_tokens: 0,
            overlap: false,
            in_flight: None,
        }
    }

    fn overlapped(cfg: SchedulerConfig) -> Self {
        Self {
            overlap: true,
            ..Self::new(cfg)
        }
    }

    /// A sequence's tokens as the step's "device" sees them: the known ones, then the
    /// token the in-flight step sampled for it while that is still pending (the engine
    /// reads it from the previous step's sample output).
    fn device_tokens(&self, seq: &engine_scheduler::Sequence) -> Vec<u32> {
        let mut tokens = seq.tokens.clone();
        if seq.num_pending > 0 {
            let launched = self.in_flight.as_ref().and_then(|(out, sampled)| {
                let x = out.scheduled.iter().find(|x| x.seq_id == seq.id)?;
                let t = sampled.iter().find(|t| t.seq_id == seq.id)?;
                (x.incarnation == seq.num_preemptions).then_some(t.token)
            });
            tokens.extend(launched);
        }
        tokens
    }

    /// A deterministic "model": the next token is a function of the sequence's tokens.
    fn next_token(tokens: &[u32], seed: u64) -> u32 {
        ((prefix_hash(tokens, tokens.len() - 1) ^ seed) % 3) as u32
    }

    fn add(&mut self, prompt: Vec<u32>, max_tokens: usize) -> Result<(), TestCaseError> {
        let cfg = self.s.config().clone();
        let id = self.next_id;
        self.next_id += 1;
        let params = SamplingParams {
            ignore_eos: true,
            ..SamplingParams::greedy(max_tokens)
        };
        let (p, m) = (prompt.len(), max_tokens);
        let res = self.s.add(Sequence::new(id, prompt, params, vec![0]));
        let expected = if p == 0 {
            Err(AdmissionError::EmptyPrompt)
        } else if p + m > cfg.max_model_len {
            Err(AdmissionError::TooLongForContext {
                prompt_tokens: p,
                max_tokens: m,
                max_model_len: cfg.max_model_len,
            })
        } else if blocks_for(p + m, cfg.block_size) > cfg.num_blocks {
            Err(AdmissionError::TooLongForCache {
                prompt_tokens: p,
                max_tokens: m,
                needed: blocks_for(p + m, cfg.block_size),
                num_blocks: cfg.num_blocks,
            })
        } else {
            Ok(())
        };
        prop_assert_eq!(&res, &expected);
        if res.is_ok() {
            self.live.push(id);
            self.max_tokens.insert(id, max_tokens);
        }
        Ok(())
    }

    fn step(&mut self, seed: u64) -> Result<bool, TestCaseError> {
        let waiting_before = self.s.num_waiting();
        let out = self.s.schedule();
        let cfg = self.s.config().clone();
        prop_assert!(out.num_batched_tokens <= cfg.max_num_batched_tokens);
        prop_assert_eq!(
            out.num_batched_tokens,
            out.scheduled
                .iter()
                .map(|x| x.num_scheduled_tokens)
                .sum::<usize>()
        );
        prop_assert!(self.s.num_running() <= cfg.max_num_seqs);
        prop_assert!(out.admitted.len() <= waiting_before + out.preempted.len());
        self.num_preempted += out.preempted.len();
        self.cached_tokens += out.cached_prefix_tokens;
        for &p in &out.preempted {
            let seq = self
                .s
                .seq(p)
                .ok_or_else(|| TestCaseError::fail("preempted seq gone"))?;
            prop_assert_eq!(seq.num_computed_tokens, 0);
            prop_assert_eq!(seq.status, SeqStatus::Waiting);
            prop_assert!(self.s.block_table(p).is_empty());
            prop_assert!(
                out.scheduled.iter().all(|x| x.seq_id != p),
                "preempted and scheduled"
            );
        }
        let mut sampled = Vec::new();
        for (k, x) in out.scheduled.iter().enumerate() {
            prop_assert!(
                out.scheduled[..k].iter().all(|y| y.seq_id != x.seq_id),
                "scheduled twice"
            );
            prop_assert!(x.num_scheduled_tokens > 0);
            let seq = self
                .s
                .seq(x.seq_id)
                .ok_or_else(|| TestCaseError::fail("scheduled seq gone"))?;
            prop_assert_eq!(seq.status, SeqStatus::Running);
            let end = x.num_computed_tokens + x.num_scheduled_tokens;
            prop_assert_eq!(end, seq.num_computed_tokens);
            // The device's view: known tokens, and the in-flight one when pending.
            let tokens = self.device_tokens(seq);
            prop_assert!(
                end <= tokens.len(),
                "a token nobody has sampled is scheduled"
            );
            prop_assert_eq!(x.samples, end == tokens.len());
            let table = self.s.block_table(x.seq_id).to_vec();
            prop_assert!(
                table.len() >= blocks_for(end, cfg.block_size),
                "table too short"
            );
            self.shadow
                .check_read(&table, &tokens, x.num_computed_tokens)
                .map_err(TestCaseError::fail)?;
            self.shadow
                .write(&table, &tokens, x.num_computed_tokens, end)
                .map_err(TestCaseError::fail)?;
            if x.samples {
                sampled.push(NewToken::new(x.seq_id, Self::next_token(&tokens, seed)));
            }
        }
        let progressed = !out.scheduled.is_empty();
        let apply = match self.overlap {
            true => std::mem::replace(&mut self.in_flight, progressed.then_some((out, sampled))),
            false => Some((out, sampled)),
        };
        if let Some((out, sampled)) = &apply {
            let finished = self.s.update_from_output(out, sampled);
            for (id, _) in finished {
                prop_assert!(self.s.block_table(id).is_empty());
            }
        }
        self.collect();
        Ok(progressed || (self.overlap && apply.is_some()))
    }

    fn abort(&mut self, k: usize) {
        if !self.live.is_empty() {
            let id = self.live[k % self.live.len()];
            self.s.finish(id, engine_scheduler::FinishReason::Abort);
            self.collect();
        }
    }

    fn collect(&mut self) {
        for seq in self.s.take_finished() {
            self.live.retain(|&l| l != seq.id);
            let aborted = seq.status == SeqStatus::Finished(engine_scheduler::FinishReason::Abort);
            self.done.insert(
                seq.id,
                (seq.params.max_tokens, seq.output_tokens().to_vec(), aborted),
            );
        }
    }

    fn check(&self) -> Result<(), TestCaseError> {
        self.s.check_invariants().map_err(TestCaseError::fail)?;
        let tables: Vec<(Vec<BlockId>, &[u32])> = self
            .live
            .iter()
            .filter_map(|&id| {
                self.s
                    .seq(id)
                    .map(|q| (self.s.block_table(id).to_vec(), q.tokens.as_slice()))
            })
            .collect();
        check_sharing(&tables, self.s.config().block_size).map_err(TestCaseError::fail)?;
        for &id in &self.live {
            let seq = self
                .s
                .seq(id)
                .ok_or_else(|| TestCaseError::fail("live seq gone"))?;
            if seq.status == SeqStatus::Waiting {
                prop_assert!(
                    self.s.block_table(id).is_empty(),
                    "waiting seq {} holds blocks",
                    id
                );
            }
        }
        Ok(())
    }

    /// Step until nothing is left; every request must finish (no livelock).
    fn drain(&mut self) -> Result<(), TestCaseError> {
        let mut idle = 0;
        let mut steps = 0;
        while self.s.has_unfinished() || self.in_flight.is_some() {
            let progressed = self.step(0)?;
            self.check()?;
            idle = if progressed { 0 } else { idle + 1 };
            prop_assert!(idle < 2, "nothing schedulable while requests remain");
            steps += 1;
            prop_assert!(steps < 5_000, "requests never finish");
        }
        Ok(())
    }
}

fn prompt_of(base: usize, len: usize, suffix: &[u32]) -> Vec<u32> {
    let mut p = bases()[base][..len].to_vec();
    p.extend(suffix);
    p
}

proptest! {
    #![proptest_config(config(1024))]

    /// Random add / step / abort on a tiny pool (preemption is frequent); invariants after
    /// every op; then every request finishes with its full output and the pool is empty.
    #[test]
    fn scheduler_random_ops_keep_invariants_and_finish(
        cfg in sched_cfg(),
        ops in prop::collection::vec(sched_op(), 1..100),
        overlap in any::<bool>(),
    ) {
        let mut h = match overlap {
            true => SchedHarness::overlapped(cfg.clone()),
            false => SchedHarness::new(cfg.clone()),
        };
        for op in &ops {
            match op {
                SchedOp::Add { base, len, suffix, max_tokens } => h.add(prompt_of(*base, *len, suffix), *max_tokens)?,
                SchedOp::Step { seed } => { h.step(*seed)?; }
                SchedOp::Abort { k } => h.abort(*k),
            }
            h.check()?;
        }
        h.drain()?;
        let n = h.s.kv().pool().num_blocks();
        prop_assert_eq!(h.s.kv().pool().num_free(), n);
        for b in 0..n {
            prop_assert_eq!(h.s.kv().pool().ref_count(b as BlockId), 0);
        }
        for (id, (max_tokens, out, aborted)) in &h.done {
            if !aborted {
                prop_assert_eq!(out.len(), *max_tokens, "request {} ended early", id);
            }
        }
    }

    /// Outputs of the deterministic mock model do not depend on pool size, budget,
    /// preemption or prefix caching: the tokens a sequence reads are always its own.
    #[test]
    fn scheduler_outputs_independent_of_pool_and_budget(
        cfg in sched_cfg(),
        prompts in prop::collection::vec((0usize..3, 1usize..20, prop::collection::vec(0u32..3, 0..3), 1usize..8), 1..10),
    ) {
        let ample = SchedulerConfig {
            max_num_seqs: 64,
            max_num_batched_tokens: 4096,
            num_blocks: 1024,
            enable_prefix_caching: false,
            ..cfg.clone()
        };
        let mut outs = Vec::new();
        let mut preempted = 0;
        let runs = [(cfg.clone(), false), (ample, false), (cfg, true)];
        for (c, overlap) in runs {
            let mut h = match overlap {
                true => SchedHarness::overlapped(c),
                false => SchedHarness::new(c),
            };
            for (base, len, suffix, max_tokens) in &prompts {
                h.add(prompt_of(*base, *len, suffix), *max_tokens)?;
            }
            h.drain()?;
            preempted += h.num_preempted;
            let mut v: Vec<(SeqId, Vec<u32>)> = h.done.into_iter().map(|(id, (_, o, _))| (id, o)).collect();
            v.sort();
            outs.push(v);
        }
        // Requests the tiny pool rejected (too long for the whole cache) are compared only
        // where both configurations ran them.
        let ran: Vec<SeqId> = outs[0].iter().map(|(id, _)| *id).collect();
        outs[1].retain(|(id, _)| ran.contains(id));
        prop_assert_eq!(&outs[0], &outs[1], "{} preemptions", preempted);
        prop_assert_eq!(&outs[0], &outs[2], "overlapped; {} preemptions", preempted);
    }
}

/// The random scheduler harness does preempt and hit the prefix cache on some inputs
/// (so the properties above are not vacuous).
#[test]
fn scheduler_harness_reaches_preemption_and_prefix_hits() {
    let cfg = SchedulerConfig {
        max_num_seqs: 4,
        max_num_batched_tokens: 8,
        max_model_len: 40,
        block_size: 2,
        num_blocks: 10,
        enable_prefix_caching: true,
    };
    for overlap in [false, true] {
        let mut h = match overlap {
            true => SchedHarness::overlapped(cfg.clone()),
            false => SchedHarness::new(cfg.clone()),
        };
        h.add(prompt_of(0, 9, &[]), 6).unwrap();
        for _ in 0..3 {
            h.step(0).unwrap();
            h.check().unwrap();
        }
        for r in 0..4 {
            h.add(prompt_of(0, 7 + r, &[1]), 6).unwrap();
        }
        h.drain().unwrap();
        assert!(
            h.num_preempted > 0,
            "expected preemption (overlap {overlap})"
        );
        assert!(
            h.cached_tokens > 0,
            "expected prefix hits (overlap {overlap})"
        );
        assert!(h.done.values().all(|(m, o, _)| o.len() == *m));
    }
}
