use proptest::prelude::*;

use super::*;

fn stage(kind: TilingKind) -> StageTiling {
    StageTiling::new(&format!("{kind:?}"), kind, 2.0)
}

fn input(shape: (u64, u64, u64), chunks: [u64; 3], budget: u64, kinds: &[TilingKind]) -> PlanInput {
    PlanInput {
        shape: Shape3::new(shape.0, shape.1, shape.2).unwrap(),
        chunks,
        cell_radius_px: 6.0,
        memory_budget_bytes: budget,
        stages: kinds.iter().map(|&k| stage(k)).collect(),
    }
}

fn contains(b: &Box3, p: [u64; 3]) -> bool {
    b.t.contains(&p[0]) && b.y.contains(&p[1]) && b.x.contains(&p[2])
}

/// Checks every invariant of the module documentation on one plan.
fn check(input: &PlanInput, plan: &TilePlan) {
    let s = input.shape;
    for (si, st) in plan.stages.iter().enumerate() {
        let volume: u64 = st.tiles.iter().map(|t| t.core.len()).sum();
        assert_eq!(volume, s.len(), "stage {si}: core volumes do not add up");
        for (i, a) in st.tiles.iter().enumerate() {
            assert_eq!(a.index, i);
            assert!(!a.core.is_empty());
            // Halo contains the core and stays inside the recording.
            for (c, h, n) in [
                (&a.core.t, &a.halo.t, s.t),
                (&a.core.y, &a.halo.y, s.y),
                (&a.core.x, &a.halo.x, s.x),
            ] {
                assert!(h.start <= c.start && c.end <= h.end && h.end <= n);
            }
            // Disjoint cores: with the volumes adding up, the cores partition the recording.
            for b in &st.tiles[i + 1..] {
                assert!(
                    !(meets(&a.core.t, &b.core.t)
                        && meets(&a.core.y, &b.core.y)
                        && meets(&a.core.x, &b.core.x)),
                    "stage {si}: cores {} and {} overlap",
                    a.core,
                    b.core
                );
            }
            let overridden =
                input.stages[si].tile_px.is_some() || input.stages[si].tile_frames.is_some();
            if !overridden {
                assert!(
                    a.memory_bytes <= input.memory_budget_bytes,
                    "stage {si} tile {i}: {} bytes over the budget {}",
                    a.memory_bytes,
                    input.memory_budget_bytes
                );
            }
            // Dependencies: exactly the previous stage's tiles whose cores meet this halo.
            match si.checked_sub(1).map(|p| &plan.stages[p]) {
                None => assert!(a.depends_on.is_empty()),
                Some(prev) => {
                    let want: Vec<usize> = prev
                        .tiles
                        .iter()
                        .filter(|b| {
                            meets(&b.core.t, &a.halo.t)
                                && meets(&b.core.y, &a.halo.y)
                                && meets(&b.core.x, &a.halo.x)
                        })
                        .map(|b| b.index)
                        .collect();
                    assert_eq!(a.depends_on, want);
                    assert!(!want.is_empty(), "a tile must read something");
                }
            }
        }
        // Chunk alignment: every interior core boundary is a multiple of the chunk when cores span
        // at least one chunk.
        for (axis, n, chunk) in [
            (0, s.t, input.chunks[0]),
            (1, s.y, input.chunks[1]),
            (2, s.x, input.chunks[2]),
        ] {
            let chunk = chunk.clamp(1, n);
            let ends: Vec<u64> = st.tiles.iter().map(|t| t.core.ranges()[axis].end).collect();
            let smallest = st
                .tiles
                .iter()
                .map(|t| t.core.shape()[axis] as u64)
                .min()
                .unwrap_or(0);
            if smallest >= chunk {
                assert!(
                    ends.iter().all(|&e| e == n || e % chunk == 0),
                    "axis {axis}: {ends:?} chunk {chunk}"
                );
            }
        }
        // Sampled points: each lies in exactly one core.
        for p in [
            [0, 0, 0],
            [s.t - 1, s.y - 1, s.x - 1],
            [s.t / 2, s.y / 3, s.x / 2],
        ] {
            assert_eq!(st.tiles.iter().filter(|t| contains(&t.core, p)).count(), 1);
        }
    }
    // Acyclic: dependencies only point to the previous stage, so stage order is a topological
    // order; Kahn's algorithm over all tasks confirms it.
    let offsets: Vec<usize> = plan
        .stages
        .iter()
        .scan(0, |acc, st| {
            let o = *acc;
            *acc += st.tiles.len();
            Some(o)
        })
        .collect();
    let n = plan.task_count();
    let mut indegree = vec![0usize; n];
    let mut edges: Vec<Vec<usize>> = vec![Vec::new(); n];
    for (si, st) in plan.stages.iter().enumerate() {
        for t in &st.tiles {
            for &d in &t.depends_on {
                edges[offsets[si - 1] + d].push(offsets[si] + t.index);
                indegree[offsets[si] + t.index] += 1;
            }
        }
    }
    let mut ready: Vec<usize> = (0..n).filter(|&i| indegree[i] == 0).collect();
    let mut done = 0;
    while let Some(i) = ready.pop() {
        done += 1;
        for &j in &edges[i] {
            indegree[j] -= 1;
            if indegree[j] == 0 {
                ready.push(j);
            }
        }
    }
    assert_eq!(done, n, "dependency cycle");
}

fn kind() -> impl Strategy<Value = TilingKind> {
    prop_oneof![
        Just(TilingKind::Temporal),
        Just(TilingKind::Spatial),
        Just(TilingKind::Whole),
        Just(TilingKind::Spatiotemporal),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]
    #[test]
    fn plans_keep_their_invariants(
        t in 1u64..20_000,
        y in 1u64..700,
        x in 1u64..700,
        chunks in (1u64..300, 1u64..300, 1u64..300),
        budget_mb in 1u64..4000,
        kinds in proptest::collection::vec(kind(), 1..4),
    ) {
        let input = input((t, y, x), [chunks.0, chunks.1, chunks.2], budget_mb << 20, &kinds);
        match plan_tiles(&input) {
            Ok(plan) => {
                prop_assume!(plan.task_count() < 3000);
                check(&input, &plan);
            }
            // Only a budget too small for the smallest tile is refused.
            Err(CoreError::Plan { reason, .. }) => prop_assert!(
                reason.contains("budget"), "{}", reason
            ),
            Err(e) => prop_assert!(false, "{}", e),
        }
    }
}

#[test]
fn a_long_session_runs_in_fixed_memory_per_task() {
    // 100 GB as float32 working data: 512x512, 100 000 frames, 2 GiB per task.
    let kinds = [
        TilingKind::Temporal,
        TilingKind::Spatiotemporal,
        TilingKind::Spatial,
    ];
    let input = input((100_000, 512, 512), [64, 128, 128], 2 << 30, &kinds);
    let plan = plan_tiles(&input).unwrap();
    check(&input, &plan);
    let [reg, denoise, detect] = [&plan.stages[0], &plan.stages[1], &plan.stages[2]];
    // Registration: 1024 frames of 2 x 1 MiB fit 2 GiB; aligned to 64-frame chunks.
    assert!(reg.tiles.iter().all(|t| t.core.shape()[0] <= 1024));
    // Detection bins frames so that a spatial tile over the whole session fits.
    assert!(detect.bin_frames > 1, "{}", detect.bin_frames);
    // A detection tile waits only for the denoising blocks it reads, not the whole stage: most
    // tiles lie within one spatial block and wait for a quarter of them.
    let partial = detect
        .tiles
        .iter()
        .filter(|t| 4 * t.depends_on.len() <= denoise.tiles.len())
        .count();
    assert!(
        2 * partial > detect.tiles.len(),
        "{partial} of {}",
        detect.tiles.len()
    );
}

#[test]
fn overrides_set_the_tile_size_and_errors_name_the_stage() {
    let mut input = input(
        (1000, 512, 512),
        [100, 128, 128],
        1 << 30,
        &[TilingKind::Spatial],
    );
    input.stages[0].tile_px = Some(128);
    let plan = plan_tiles(&input).unwrap();
    check(&input, &plan);
    assert_eq!(plan.stages[0].tiles.len(), 16);
    assert_eq!(plan.stages[0].halo_px, 12);
    assert_eq!(plan.stages[0].tiles[0].halo.y, 0..140);
    assert_eq!(plan.stages[0].tiles[5].halo.y, 116..268);

    let tiny = PlanInput {
        memory_budget_bytes: 1000,
        ..input.clone()
    };
    let e = plan_tiles(&tiny).unwrap_err().to_string();
    assert!(e.contains("stage 'Spatial'") && e.contains("budget"), "{e}");
    input.stages[0].tile_px = Some(0);
    assert!(plan_tiles(&input).is_err());
}
