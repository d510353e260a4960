//! Components (footprints, traces, seeds), the background and images as a task stores them for
//! the tasks after it: sparse footprints in whole-field pixel indices (`y * width + x`), traces as
//! a (component, frame) float32 array.

use ndarray::{Array1, Array2, Ix1, Ix2};
use serde_json::json;
use tessera_io::{Output, Store};
use tessera_kernels::extract::{Background, Component};

use crate::WorkerError;

/// Writes `comps` as the group `group`: `footprints/{cell,pixel,weight}`, `traces` and `seeds`.
pub fn write_components(
    out: &Output,
    group: &str,
    width: usize,
    frames: usize,
    comps: &[Component],
) -> Result<(), WorkerError> {
    let mut attrs = serde_json::Map::new();
    attrs.insert("count".into(), json!(comps.len()));
    attrs.insert("frames".into(), json!(frames));
    out.write_group_at(group, attrs)?;
    out.write_footprints(
        &format!("{group}/footprints"),
        width,
        comps.iter().map(|c| (&c.pixels[..], &c.weights[..])),
    )?;
    let mut traces = Array2::<f32>::zeros((comps.len(), frames));
    for (mut row, c) in traces.outer_iter_mut().zip(comps) {
        for (d, &v) in row.iter_mut().zip(&c.trace) {
            *d = v;
        }
    }
    out.write_array(
        &format!("{group}/traces"),
        &traces.into_dyn(),
        &["cell", "t"],
        serde_json::Map::new(),
    )?;
    let seeds = Array2::from_shape_fn((comps.len(), 2), |(i, a)| comps[i].seed[a] as u64);
    out.write_array(
        &format!("{group}/seeds"),
        &seeds.into_dyn(),
        &["cell", "axis"],
        serde_json::Map::new(),
    )?;
    Ok(())
}

fn count(store: &Store, group: &str) -> Result<usize, WorkerError> {
    store
        .attributes(group)?
        .and_then(|a| a.get("count").and_then(serde_json::Value::as_u64))
        .map(|c| c as usize)
        .ok_or_else(|| {
            WorkerError::Spec(format!(
                "{}: group {group} has no component count",
                store.location()
            ))
        })
}

/// Reads the components [`write_components`] wrote.
pub fn read_components(store: &Store, group: &str) -> Result<Vec<Component>, WorkerError> {
    let k = count(store, group)?;
    let bad = |what: &str| {
        WorkerError::Spec(format!(
            "{}: {group}/{what} has the wrong shape",
            store.location()
        ))
    };
    let one = |name: &str| -> Result<Array1<u32>, WorkerError> {
        store
            .read_array::<u32>(&format!("{group}/footprints/{name}"))?
            .into_dimensionality::<Ix1>()
            .map_err(|_| bad(name))
    };
    let (cell, pixel) = (one("cell")?, one("pixel")?);
    let weight = store
        .read_array::<f32>(&format!("{group}/footprints/weight"))?
        .into_dimensionality::<Ix1>()
        .map_err(|_| bad("weight"))?;
    let traces = store
        .read_array::<f32>(&format!("{group}/traces"))?
        .into_dimensionality::<Ix2>()
        .map_err(|_| bad("traces"))?;
    let seeds = store
        .read_array::<u64>(&format!("{group}/seeds"))?
        .into_dimensionality::<Ix2>()
        .map_err(|_| bad("seeds"))?;
    if traces.nrows() != k
        || seeds.dim() != (k, 2)
        || cell.len() != pixel.len()
        || cell.len() != weight.len()
    {
        return Err(bad("footprints, traces or seeds"));
    }
    let mut comps: Vec<Component> = (0..k)
        .map(|i| Component {
            pixels: Vec::new(),
            weights: Vec::new(),
            trace: traces.row(i).to_vec(),
            seed: [seeds[[i, 0]] as usize, seeds[[i, 1]] as usize],
        })
        .collect();
    for ((&c, &p), &w) in cell.iter().zip(&pixel).zip(&weight) {
        let c = comps
            .get_mut(c as usize)
            .ok_or_else(|| bad("footprints/cell"))?;
        c.pixels.push(p);
        c.weights.push(w);
    }
    Ok(comps)
}

/// Writes the background (`b`: pixels x rank, `f`: rank x frames) as the group `group`.
pub fn write_background(out: &Output, group: &str, bg: &Background) -> Result<(), WorkerError> {
    out.write_group_at(group, serde_json::Map::new())?;
    out.write_array(
        &format!("{group}/b"),
        &bg.b.clone().into_dyn(),
        &["pixel", "rank"],
        serde_json::Map::new(),
    )?;
    out.write_array(
        &format!("{group}/f"),
        &bg.f.clone().into_dyn(),
        &["rank", "t"],
        serde_json::Map::new(),
    )?;
    Ok(())
}

pub fn read_background(store: &Store, group: &str) -> Result<Background, WorkerError> {
    let two = |name: &str| -> Result<Array2<f32>, WorkerError> {
        store
            .read_array::<f32>(&format!("{group}/{name}"))?
            .into_dimensionality::<Ix2>()
            .map_err(|_| {
                WorkerError::Spec(format!(
                    "{}: {group}/{name} is not two-dimensional",
                    store.location()
                ))
            })
    };
    Ok(Background {
        b: two("b")?,
        f: two("f")?,
    })
}
