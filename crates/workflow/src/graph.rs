//! The stage graph: what each stage consumes must be produced before it, and a stage that changes
//! the movie must come before the stages that read the movie for cells.
//!
//! The workflow starts with the recording's movie. Stages may be reordered, dropped or swapped for
//! another with the same kinds (denoise before or after registration, `register-piecewise` for
//! `register`); an order whose kinds do not line up is refused, naming the stage and what it needs.

use std::collections::BTreeMap;

use crate::catalog::{DataKind, catalog};
use crate::error::Diagnostic;
use crate::parse::Placed;
use crate::schema::Stage;

pub(crate) fn check(stages: &[Stage], placed: &[Placed]) -> Vec<Diagnostic> {
    let mut diags = Vec::new();
    // Which stage produced each kind (the movie: the recording itself).
    let mut producer: BTreeMap<DataKind, String> = BTreeMap::new();
    producer.insert(DataKind::Movie, "the recording".into());
    // The first stage that read the movie to find or measure cells.
    let mut movie_reader: Option<&str> = None;
    for (stage, place) in stages.iter().zip(placed) {
        let spec = &place.spec;
        let at = |message: String| Diagnostic {
            line: place.line,
            column: place.column,
            message,
        };
        for kind in spec.consumes {
            if !producer.contains_key(kind) {
                let makers: Vec<String> = catalog()
                    .iter()
                    .filter(|s| s.produces.contains(kind))
                    .map(|s| format!("`{}`", s.name))
                    .collect();
                diags.push(at(format!(
                    "stage `{}` needs {}, which no stage before it produces: add {} before it",
                    stage.id,
                    kind.name(),
                    makers.join(" or ")
                )));
            }
        }
        if spec.produces.contains(&DataKind::Movie)
            && let Some(reader) = movie_reader
        {
            diags.push(at(format!(
                "stage `{}` changes the movie after `{reader}` read it, so their results would not match the movie: move `{}` before `{reader}`",
                stage.id, stage.id
            )));
        }
        if spec.consumes.contains(&DataKind::Movie)
            && movie_reader.is_none()
            && spec
                .produces
                .iter()
                .any(|k| !matches!(k, DataKind::Movie | DataKind::Shifts | DataKind::Summary))
        {
            movie_reader = Some(&stage.id);
        }
        for kind in spec.produces {
            if *kind == DataKind::Movie || *kind == DataKind::Shifts {
                // Each registration or denoising step replaces the movie (and the shifts).
                producer.insert(*kind, stage.id.clone());
                continue;
            }
            if let Some(first) = producer.get(kind) {
                diags.push(at(format!(
                    "stage `{}` produces {} again, after `{first}`: a workflow produces each result once, so drop one of them",
                    stage.id,
                    kind.name()
                )));
            } else {
                producer.insert(*kind, stage.id.clone());
            }
        }
    }
    diags
}
