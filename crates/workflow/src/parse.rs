//! From YAML text to a [`Workflow`]: a walk over the marked YAML tree that checks every key and
//! value against the schema and the stage catalogue, collecting every problem with its line and
//! column instead of stopping at the first.

use std::collections::BTreeMap;

use marked_yaml::types::{MarkedMappingNode, MarkedScalarNode};
use marked_yaml::{LoadError, LoaderOptions, Node, Span, parse_yaml_with_options};
use serde_json::{Value, json};

use crate::catalog::{ParamType, StageSpec, catalog, positive};
use crate::error::Diagnostic;
use crate::schema::{
    API_VERSION, DEFAULT_NWB_FILE, Input, KIND, Metadata, NwbOutput, Outputs, Resources, Stage,
    TileSettings, Workflow,
};
use tessera_core::session::{RawData, Session, Subject};

/// A stage as parsed, with where its `uses` was written (for the graph's messages).
pub(crate) struct Placed {
    pub spec: StageSpec,
    pub line: usize,
    pub column: usize,
}

/// Parses and checks `text`. On success also returns each stage's catalogue entry and position.
pub(crate) fn parse(text: &str) -> Result<(Workflow, Vec<Placed>), Vec<Diagnostic>> {
    // Quoted scalars stay strings: `"6"` is not the number 6.
    let options = LoaderOptions::default()
        .error_on_duplicate_keys(true)
        .prevent_coercion(true);
    let root = match parse_yaml_with_options(0, text, options) {
        Ok(root) => root,
        Err(e) => return Err(vec![load_error(&e)]),
    };
    let mut w = Walker { diags: Vec::new() };
    let result = w.workflow(&root);
    if w.diags.is_empty()
        && let Some(ok) = result
    {
        return Ok(ok);
    }
    let mut diags = w.diags;
    diags.sort_by_key(|d| (d.line, d.column));
    diags.dedup();
    Err(diags)
}

fn load_error(e: &LoadError) -> Diagnostic {
    let at = |m: &marked_yaml::Marker, message: String| Diagnostic {
        line: m.line(),
        column: m.column(),
        message,
    };
    match e {
        LoadError::TopLevelMustBeMapping(m) => at(
            m,
            "a workflow is a mapping with apiVersion, kind, input and stages at the top level"
                .into(),
        ),
        LoadError::TopLevelMustBeSequence(m) => at(m, "expected a list at the top level".into()),
        LoadError::UnexpectedAnchor(m) => at(m, "anchors (&name) are not supported".into()),
        LoadError::MappingKeyMustBeScalar(m) => {
            at(m, "keys must be plain words, not lists or mappings".into())
        }
        LoadError::UnexpectedTag(m) => at(m, "YAML tags (!tag) are not supported".into()),
        LoadError::DuplicateKey(inner) => {
            let first = inner.prev_key.span().start().map_or_else(
                || "?".to_string(),
                |m| format!("{}:{}", m.line(), m.column()),
            );
            let mut d = Diagnostic {
                line: 1,
                column: 1,
                message: format!(
                    "key `{}` appears twice in the same mapping (first at {first})",
                    inner.key.as_str()
                ),
            };
            if let Some(m) = inner.key.span().start() {
                d.line = m.line();
                d.column = m.column();
            }
            d
        }
        LoadError::ScanError(m, e) => {
            // The scanner's own text ends with its position; ours leads with it.
            let text = e.to_string();
            let text = text
                .split(" at byte ")
                .next()
                .unwrap_or(&text)
                .split(" at line ")
                .next()
                .unwrap_or(&text)
                .to_string();
            at(
                m,
                format!("invalid YAML: {text} (check the indentation here)"),
            )
        }
        #[allow(unreachable_patterns)]
        other => Diagnostic {
            line: 1,
            column: 1,
            message: format!("invalid YAML: {other}"),
        },
    }
}

/// The closest of `options` to `word`, when close enough to be a likely typo.
pub(crate) fn suggest<'a>(
    word: &str,
    options: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    let lower = word.to_ascii_lowercase();
    options
        .into_iter()
        .map(|o| {
            (
                strsim::damerau_levenshtein(&lower, &o.to_ascii_lowercase()),
                o,
            )
        })
        .filter(|(d, o)| *d <= (o.len() / 3).max(2))
        .min_by_key(|(d, o)| (*d, *o))
        .map(|(_, o)| o)
}

fn did_you_mean<'a>(word: &str, options: impl IntoIterator<Item = &'a str>) -> String {
    suggest(word, options).map_or_else(String::new, |s| format!("; did you mean `{s}`?"))
}

fn kind_of(node: &Node) -> &'static str {
    match node {
        Node::Scalar(_) => "a single value",
        Node::Mapping(_) => "a mapping",
        Node::Sequence(_) => "a list",
    }
}

/// An unquoted `null`, `~` or nothing.
fn is_null(s: &MarkedScalarNode) -> bool {
    s.may_coerce() && matches!(s.as_str(), "" | "~" | "null" | "Null" | "NULL")
}

/// Parses a byte size: a number with an optional unit (`B`, `kB`/`MB`/`GB`/`TB` in powers of 1000,
/// `KiB`/`MiB`/`GiB`/`TiB` in powers of 1024), case-insensitive: `2GiB`, `1.5GB`, `500000000`.
pub fn parse_bytes(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let value: f64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a size: expected a number and a unit such as 2GiB"))?;
    let scale: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "kb" | "k" => 1e3,
        "mb" | "m" => 1e6,
        "gb" | "g" => 1e9,
        "tb" | "t" => 1e12,
        "kib" => 1024.0,
        "mib" => 1024.0 * 1024.0,
        "gib" => 1024.0 * 1024.0 * 1024.0,
        "tib" => 1024.0_f64.powi(4),
        other => {
            return Err(format!(
                "unknown unit {other:?} in {s:?}: use B, kB, MB, GB, TB, KiB, MiB, GiB or TiB"
            ));
        }
    };
    let bytes = value * scale;
    if !(bytes.is_finite() && bytes >= 1.0 && bytes < 2f64.powi(63)) {
        return Err(format!("{s:?} is not a usable size"));
    }
    Ok(bytes as u64)
}

struct Walker {
    diags: Vec<Diagnostic>,
}

const TOP_KEYS: &[&str] = &[
    "apiVersion",
    "kind",
    "metadata",
    "input",
    "stages",
    "outputs",
    "resources",
];
const METADATA_KEYS: &[&str] = &["name", "description"];
const INPUT_KEYS: &[&str] = &["uri", "array", "frame_rate_hz", "pixel_size_um"];
const STAGE_KEYS: &[&str] = &["id", "uses", "with", "tile"];
const TILE_KEYS: &[&str] = &["size_px", "frames", "halo_px"];
const OUTPUT_KEYS: &[&str] = &["uri", "overwrite", "nwb"];
const NWB_KEYS: &[&str] = &[
    "file",
    "session_description",
    "session_start_time",
    "identifier",
    "experimenter",
    "lab",
    "institution",
    "subject",
    "device",
    "indicator",
    "location",
    "excitation_lambda_nm",
    "emission_lambda_nm",
    "pixel_size_um",
    "raw",
];
const SUBJECT_KEYS: &[&str] = &["subject_id", "species", "sex", "age"];
const RESOURCE_KEYS: &[&str] = &["memory_per_task", "retries"];

impl Walker {
    fn at(&mut self, span: &Span, message: String) {
        let (line, column) = span
            .start()
            .map_or((1, 1), |m| (m.line().max(1), m.column().max(1)));
        self.diags.push(Diagnostic {
            line,
            column,
            message,
        });
    }

    /// Flags keys of `map` outside `allowed`, suggesting the nearest.
    fn keys(&mut self, map: &MarkedMappingNode, allowed: &[&str], place: &str) {
        for key in map.keys() {
            if !allowed.contains(&key.as_str()) {
                let hint = did_you_mean(key.as_str(), allowed.iter().copied());
                let hint = if hint.is_empty() {
                    format!(" (valid keys: {})", allowed.join(", "))
                } else {
                    hint
                };
                self.at(
                    key.span(),
                    format!("unknown key `{}` in {place}{hint}", key.as_str()),
                );
            }
        }
    }

    /// `node` as a mapping; an unquoted null counts as an empty one.
    fn mapping<'a>(&mut self, node: &'a Node, what: &str) -> Option<Option<&'a MarkedMappingNode>> {
        match node {
            Node::Mapping(m) => Some(Some(m)),
            Node::Scalar(s) if is_null(s) => Some(None),
            other => {
                self.at(
                    other.span(),
                    format!(
                        "`{what}` must be a mapping of keys to values, found {}",
                        kind_of(other)
                    ),
                );
                None
            }
        }
    }

    fn scalar<'a>(
        &mut self,
        node: &'a Node,
        what: &str,
        expected: &str,
    ) -> Option<&'a MarkedScalarNode> {
        match node {
            Node::Scalar(s) => Some(s),
            other => {
                self.at(
                    other.span(),
                    format!("`{what}` must be {expected}, found {}", kind_of(other)),
                );
                None
            }
        }
    }

    fn string(&mut self, node: &Node, what: &str) -> Option<String> {
        let s = self.scalar(node, what, "a string")?;
        if is_null(s) {
            self.at(
                s.span(),
                format!("`{what}` must be a string, found nothing"),
            );
            return None;
        }
        Some(s.as_str().to_string())
    }

    fn optional_string(
        &mut self,
        map: &MarkedMappingNode,
        key: &str,
        place: &str,
    ) -> Option<String> {
        let node = map.get_node(key)?;
        if let Node::Scalar(s) = node
            && is_null(s)
        {
            return None;
        }
        self.string(node, &format!("{place}.{key}"))
    }

    fn bool(&mut self, node: &Node, what: &str) -> Option<bool> {
        let s = self.scalar(node, what, "true or false")?;
        match s.as_bool() {
            Some(b) => Some(b),
            None => {
                self.at(
                    s.span(),
                    format!("`{what}` must be true or false, found `{}`", s.as_str()),
                );
                None
            }
        }
    }

    /// A value of a parameter type, as JSON.
    fn typed(&mut self, node: &Node, what: &str, ty: &ParamType) -> Option<Value> {
        let expected = ty.describe();
        let s = self.scalar(node, what, &expected)?;
        let found = || {
            if s.may_coerce() {
                format!("`{}`", s.as_str())
            } else {
                format!("the quoted string \"{}\"", s.as_str())
            }
        };
        match ty {
            ParamType::Auto { inner } => {
                if is_null(s) || (s.may_coerce() && s.as_str().eq_ignore_ascii_case("auto")) {
                    Some(Value::Null)
                } else {
                    self.typed(node, what, inner)
                }
            }
            ParamType::Float {
                min,
                max,
                min_exclusive,
            } => match s.as_f64().filter(|v| v.is_finite()) {
                Some(v) if (v > *min || (!min_exclusive && v == *min)) && v <= *max => {
                    Some(json!(v))
                }
                _ => {
                    self.at(
                        s.span(),
                        format!("`{what}` must be a {expected}, found {}", found()),
                    );
                    None
                }
            },
            ParamType::Int { min, max } => match s.as_i64() {
                Some(v) if v >= *min && v <= *max => Some(json!(v)),
                _ => {
                    self.at(
                        s.span(),
                        format!("`{what}` must be an {expected}, found {}", found()),
                    );
                    None
                }
            },
            ParamType::Bool => self.bool(node, what).map(Value::Bool),
            ParamType::Choice { options } => {
                if options.contains(&s.as_str()) {
                    Some(json!(s.as_str()))
                } else {
                    let hint = did_you_mean(s.as_str(), options.iter().copied());
                    self.at(
                        s.span(),
                        format!("`{what}` must be {expected}, found {}{hint}", found()),
                    );
                    None
                }
            }
        }
    }

    fn uint(&mut self, node: &Node, what: &str, min: i64, max: i64) -> Option<u64> {
        self.typed(node, what, &ParamType::Int { min, max })
            .and_then(|v| v.as_u64())
    }

    fn workflow(&mut self, root: &Node) -> Option<(Workflow, Vec<Placed>)> {
        let Node::Mapping(top) = root else {
            self.at(
                root.span(),
                "a workflow is a mapping with apiVersion, kind, input and stages at the top level"
                    .into(),
            );
            return None;
        };
        self.keys(top, TOP_KEYS, "the workflow");
        // Missing top-level keys are reported at the top of the file.
        let missing = |w: &mut Walker, key: &str, what: &str| {
            w.diags.push(Diagnostic {
                line: 1,
                column: 1,
                message: format!("missing key `{key}` in the workflow: {what}"),
            });
        };

        let api_version = match top.get_node("apiVersion") {
            Some(n) => self.string(n, "apiVersion").and_then(|v| {
                if v == API_VERSION {
                    Some(v)
                } else {
                    self.at(
                        n.span(),
                        format!("unsupported apiVersion `{v}`: this tessera reads `{API_VERSION}`"),
                    );
                    None
                }
            }),
            None => {
                missing(
                    self,
                    "apiVersion",
                    &format!("the schema version, `{API_VERSION}`"),
                );
                None
            }
        };
        let kind = match top.get_node("kind") {
            Some(n) => self.string(n, "kind").and_then(|v| {
                if v == KIND {
                    Some(v)
                } else {
                    self.at(
                        n.span(),
                        format!("unsupported kind `{v}`: expected `{KIND}`"),
                    );
                    None
                }
            }),
            None => {
                missing(self, "kind", &format!("the document type, `{KIND}`"));
                None
            }
        };
        let metadata = match top.get_node("metadata") {
            Some(n) => match self.mapping(n, "metadata") {
                Some(Some(m)) => {
                    self.keys(m, METADATA_KEYS, "`metadata`");
                    Metadata {
                        name: self.optional_string(m, "name", "metadata"),
                        description: self.optional_string(m, "description", "metadata"),
                    }
                }
                _ => Metadata::default(),
            },
            None => Metadata::default(),
        };
        let input = match top.get_node("input") {
            Some(n) => self.input(n),
            None => {
                missing(
                    self,
                    "input",
                    "the recording to process (uri, array, frame_rate_hz, pixel_size_um; the uri may be left to --input)",
                );
                None
            }
        };
        let stages = match top.get_node("stages") {
            Some(n) => self.stages(n),
            None => {
                missing(
                    self,
                    "stages",
                    "the list of stages to run (see `tessera stages`)",
                );
                None
            }
        };
        let outputs = match top.get_node("outputs") {
            Some(n) => self.outputs(n),
            None => Some(Outputs::default()),
        };
        let resources = match top.get_node("resources") {
            Some(n) => self.resources(n),
            None => Some(Resources::default()),
        };
        let (stages, placed) = stages?;
        let (input, mut outputs) = (input?, outputs?);
        // The NWB file's pixel size defaults to the one the workflow gives its input.
        if let Some(nwb) = outputs.nwb.as_mut()
            && nwb.session.pixel_size_um.is_none()
        {
            nwb.session.pixel_size_um = input.pixel_size_um;
        }
        Some((
            Workflow {
                api_version: api_version?,
                kind: kind?,
                metadata,
                input,
                stages,
                outputs,
                resources: resources?,
            },
            placed,
        ))
    }

    fn input(&mut self, node: &Node) -> Option<Input> {
        let map = match self.mapping(node, "input")? {
            Some(m) => m,
            None => return Some(Input::default()),
        };
        self.keys(map, INPUT_KEYS, "`input`");
        let positive = positive();
        let number = |w: &mut Walker, key: &str| -> Option<Option<f64>> {
            match map.get_node(key) {
                None => Some(None),
                Some(n) => w
                    .typed(n, &format!("input.{key}"), &positive)
                    .map(|v| v.as_f64()),
            }
        };
        let frame_rate_hz = number(self, "frame_rate_hz");
        let pixel_size_um = number(self, "pixel_size_um");
        Some(Input {
            uri: self.optional_string(map, "uri", "input"),
            array: self.optional_string(map, "array", "input"),
            frame_rate_hz: frame_rate_hz?,
            pixel_size_um: pixel_size_um?,
        })
    }

    fn stages(&mut self, node: &Node) -> Option<(Vec<Stage>, Vec<Placed>)> {
        let Node::Sequence(list) = node else {
            self.at(
                node.span(),
                format!(
                    "`stages` must be a list of stages (`- uses: register`), found {}",
                    kind_of(node)
                ),
            );
            return None;
        };
        if list.is_empty() {
            self.at(
                list.span(),
                "`stages` is empty: a workflow runs at least one stage".into(),
            );
            return None;
        }
        let names: Vec<&'static str> = catalog().iter().map(|s| s.name).collect();
        let mut stages = Vec::new();
        let mut placed = Vec::new();
        let mut ids: BTreeMap<String, usize> = BTreeMap::new();
        let mut ok = true;
        for (i, item) in list.iter().enumerate() {
            let Some(Some(map)) = self.mapping(item, &format!("stages[{i}]")) else {
                ok = false;
                continue;
            };
            let Some(uses_node) = map.get_node("uses") else {
                self.keys(map, STAGE_KEYS, &format!("stage {}", i + 1));
                self.at(
                    map.span(),
                    format!(
                        "stage {} has no `uses`: name the stage to run (one of {})",
                        i + 1,
                        names.join(", ")
                    ),
                );
                ok = false;
                continue;
            };
            let uses = self.string(uses_node, &format!("uses` of stage `{}", i + 1));
            let label = match &uses {
                Some(u) => format!("stage {} (`{u}`)", i + 1),
                None => format!("stage {}", i + 1),
            };
            self.keys(map, STAGE_KEYS, &label);
            let Some(uses) = uses else {
                ok = false;
                continue;
            };
            let Some(spec) = catalog().into_iter().find(|s| s.name == uses) else {
                let hint = did_you_mean(&uses, names.iter().copied());
                let hint = if hint.is_empty() {
                    format!(" (stages: {})", names.join(", "))
                } else {
                    hint
                };
                self.at(uses_node.span(), format!("unknown stage `{uses}`{hint}"));
                ok = false;
                continue;
            };
            let id = match map.get_node("id") {
                Some(n) => self.string(n, &format!("id` of stage `{}", i + 1)),
                None => Some(uses.clone()),
            };
            let Some(id) = id else {
                ok = false;
                continue;
            };
            if id.is_empty()
                || !id
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            {
                let span = map.get_node("id").map_or(uses_node.span(), Node::span);
                self.at(
                    span,
                    format!(
                        "stage id `{id}` may hold only letters, digits, `-` and `_` (it names the stage's tasks)"
                    ),
                );
                ok = false;
            }
            if let Some(first) = ids.insert(id.clone(), i) {
                let span = map.get_node("id").map_or(uses_node.span(), Node::span);
                self.at(
                    span,
                    format!(
                        "stage id `{id}` is already used by stage {}: give this one its own `id`",
                        first + 1
                    ),
                );
                ok = false;
            }
            let with = self.params(map.get_node("with"), &spec, &id);
            let tile = self.tile(map.get_node("tile"), &spec, &id);
            let (line, column) = uses_node
                .span()
                .start()
                .map_or((1, 1), |m| (m.line(), m.column()));
            match (with, tile) {
                (Some(with), Some(tile)) => {
                    stages.push(Stage {
                        id,
                        uses,
                        with,
                        tile,
                    });
                    placed.push(Placed { spec, line, column });
                }
                _ => ok = false,
            }
        }
        ok.then_some((stages, placed))
    }

    fn params(
        &mut self,
        node: Option<&Node>,
        spec: &StageSpec,
        id: &str,
    ) -> Option<BTreeMap<String, Value>> {
        let mut out: BTreeMap<String, Value> = spec
            .params
            .iter()
            .map(|p| (p.name.to_string(), p.default.clone()))
            .collect();
        let Some(node) = node else {
            return Some(out);
        };
        let map = match self.mapping(node, &format!("with` of stage `{id}"))? {
            Some(m) => m,
            None => return Some(out),
        };
        let names: Vec<&str> = spec.params.iter().map(|p| p.name).collect();
        let mut ok = true;
        for (key, value) in map.iter() {
            let Some(param) = spec.param(key.as_str()) else {
                let hint = did_you_mean(key.as_str(), names.iter().copied());
                let hint = if !hint.is_empty() {
                    hint
                } else if names.is_empty() {
                    format!(": `{}` takes no parameters", spec.name)
                } else {
                    format!(" (parameters: {})", names.join(", "))
                };
                let stage = if id == spec.name {
                    format!("`{id}`")
                } else {
                    format!("`{id}` ({})", spec.name)
                };
                self.at(
                    key.span(),
                    format!(
                        "unknown parameter `{}` of stage {stage}{hint}",
                        key.as_str()
                    ),
                );
                ok = false;
                continue;
            };
            match self.typed(
                value,
                &format!("with.{}` of stage `{id}", param.name),
                &param.ty,
            ) {
                Some(v) => {
                    out.insert(param.name.to_string(), v);
                }
                None => ok = false,
            }
        }
        ok.then_some(out)
    }

    fn tile(&mut self, node: Option<&Node>, spec: &StageSpec, id: &str) -> Option<TileSettings> {
        let Some(node) = node else {
            return Some(TileSettings::default());
        };
        let map = match self.mapping(node, &format!("tile` of stage `{id}"))? {
            Some(m) => m,
            None => return Some(TileSettings::default()),
        };
        self.keys(map, TILE_KEYS, &format!("`tile` of stage `{id}`"));
        use tessera_core::tiling::TilingKind::*;
        let mut ok = true;
        let mut get =
            |w: &mut Walker, key: &str, min: i64, applies: bool, how: &str| -> Option<u64> {
                let n = map.get_node(key)?;
                if !applies {
                    w.at(
                        n.span(),
                        format!("`tile.{key}` does not apply to stage `{id}`, which {how}"),
                    );
                    ok = false;
                    return None;
                }
                let v = w.uint(n, &format!("tile.{key}` of stage `{id}"), min, 1 << 40);
                if v.is_none() {
                    ok = false;
                }
                v
            };
        let how = match spec.tiling {
            None => "reads no pixels and is not tiled",
            Some(Temporal) => "cuts runs of whole frames",
            Some(Spatial) => "cuts spatial tiles over all frames",
            Some(Spatiotemporal) => "cuts blocks of frames and pixels",
            Some(Whole) => "runs as one task over the whole recording",
        };
        let spatial = matches!(spec.tiling, Some(Spatial | Spatiotemporal));
        let temporal = matches!(spec.tiling, Some(Temporal | Spatiotemporal));
        let size_px = get(self, "size_px", 8, spatial, how);
        let frames = get(self, "frames", 1, temporal, how);
        let halo_px = get(self, "halo_px", 0, spatial, how);
        ok.then_some(TileSettings {
            size_px,
            frames,
            halo_px,
        })
    }

    fn outputs(&mut self, node: &Node) -> Option<Outputs> {
        let map = match self.mapping(node, "outputs")? {
            Some(m) => m,
            None => return Some(Outputs::default()),
        };
        self.keys(map, OUTPUT_KEYS, "`outputs`");
        let overwrite = match map.get_node("overwrite") {
            Some(n) => self.bool(n, "outputs.overwrite")?,
            None => false,
        };
        let nwb = match map.get_node("nwb") {
            Some(n) => Some(self.nwb(n)?),
            None => None,
        };
        Some(Outputs {
            uri: self.optional_string(map, "uri", "outputs"),
            overwrite,
            nwb,
        })
    }

    /// `outputs.nwb`: every field is checked where it is written; what only the whole can tell
    /// (`Session::check`) is reported at the field, or at `nwb:` for a missing one.
    fn nwb(&mut self, node: &Node) -> Option<NwbOutput> {
        let place = "outputs.nwb";
        let Some(map) = self.mapping(node, place)? else {
            self.at(
                node.span(),
                "`outputs.nwb` needs at least `session_start_time` (ISO 8601 with a UTC offset)"
                    .into(),
            );
            return None;
        };
        self.keys(map, NWB_KEYS, "`outputs.nwb`");
        let before = self.diags.len();
        let file = self
            .optional_string(map, "file", place)
            .unwrap_or_else(|| DEFAULT_NWB_FILE.to_string());
        let start = self.optional_string(map, "session_start_time", place);
        let mut session = Session::new(start.clone().unwrap_or_default());
        if let Some(v) = self.optional_string(map, "session_description", place) {
            session.session_description = v;
        }
        session.identifier = self.optional_string(map, "identifier", place);
        session.lab = self.optional_string(map, "lab", place);
        session.institution = self.optional_string(map, "institution", place);
        for (key, field) in [
            ("device", &mut session.device),
            ("indicator", &mut session.indicator),
            ("location", &mut session.location),
        ] {
            if let Some(v) = self.optional_string(map, key, place) {
                *field = v;
            }
        }
        match map.get_node("experimenter") {
            Some(Node::Sequence(items)) => {
                for item in items.iter() {
                    if let Some(v) = self.string(item, "outputs.nwb.experimenter") {
                        session.experimenter.push(v);
                    }
                }
            }
            Some(n) => session
                .experimenter
                .extend(self.string(n, "outputs.nwb.experimenter")),
            None => {}
        }
        let positive = ParamType::Float {
            min: 0.0,
            max: 1e6,
            min_exclusive: true,
        };
        for key in [
            "excitation_lambda_nm",
            "emission_lambda_nm",
            "pixel_size_um",
        ] {
            let Some(n) = map.get_node(key) else { continue };
            let v = self.typed(n, &format!("{place}.{key}"), &positive);
            match (key, v.and_then(|v| v.as_f64())) {
                ("excitation_lambda_nm", Some(v)) => session.excitation_lambda_nm = v,
                ("emission_lambda_nm", Some(v)) => session.emission_lambda_nm = v,
                (_, Some(v)) => session.pixel_size_um = Some(v),
                (_, None) => {}
            }
        }
        if let Some(n) = map.get_node("raw") {
            let choice = ParamType::Choice {
                options: &["none", "copy"],
            };
            if self.typed(n, &format!("{place}.raw"), &choice) == Some(json!("copy")) {
                session.raw = RawData::Copy;
            }
        }
        if let Some(n) = map.get_node("subject")
            && let Some(Some(m)) = self.mapping(n, "outputs.nwb.subject")
        {
            self.keys(m, SUBJECT_KEYS, "`outputs.nwb.subject`");
            let mut subject = Subject {
                sex: "U".into(),
                ..Subject::default()
            };
            for (key, field) in [
                ("subject_id", &mut subject.subject_id),
                ("species", &mut subject.species),
                ("sex", &mut subject.sex),
                ("age", &mut subject.age),
            ] {
                if let Some(v) = self.optional_string(m, key, "outputs.nwb.subject") {
                    *field = v;
                }
            }
            session.subject = Some(subject);
        }
        let mut ok = self.diags.len() == before;
        if file.is_empty() || file.contains('/') || file.starts_with('.') || !file.ends_with(".nwb")
        {
            let span = map.get_node("file").map_or(node.span(), |n| n.span());
            self.at(
                span,
                format!(
                    "`outputs.nwb.file` {file:?}: give a file name ending in .nwb, without a \
                     slash, not starting with a dot (it is written at the output's root)"
                ),
            );
            ok = false;
        }
        for (field, problem) in session.check() {
            let (parent, key) = match field.split_once('.') {
                Some((p, k)) => (map.get_node(p), k),
                None => (Some(node), field),
            };
            let span = match parent {
                Some(Node::Mapping(m)) => m.get_node(key).map_or(m.span(), |n| n.span()),
                Some(n) => n.span(),
                None => node.span(),
            };
            let message = if field == "session_start_time" && start.is_none() {
                "missing key `session_start_time` in `outputs.nwb`: when the session started, \
                 ISO 8601 with a UTC offset (e.g. 2026-03-01T10:15:00+01:00)"
                    .to_string()
            } else {
                format!("`{place}.{field}`: {problem}")
            };
            self.at(span, message);
            ok = false;
        }
        ok.then_some(NwbOutput { file, session })
    }

    fn resources(&mut self, node: &Node) -> Option<Resources> {
        let map = match self.mapping(node, "resources")? {
            Some(m) => m,
            None => return Some(Resources::default()),
        };
        self.keys(map, RESOURCE_KEYS, "`resources`");
        let mut r = Resources::default();
        let mut ok = true;
        if let Some(n) = map.get_node("memory_per_task") {
            match self.scalar(n, "resources.memory_per_task", "a size such as 2GiB") {
                Some(s) => match parse_bytes(s.as_str()) {
                    Ok(b) if b >= 16 << 20 => r.memory_per_task_bytes = b,
                    Ok(b) => {
                        self.at(
                            s.span(),
                            format!("`resources.memory_per_task` of {b} bytes is too small: a task needs at least 16MiB"),
                        );
                        ok = false;
                    }
                    Err(e) => {
                        self.at(s.span(), format!("`resources.memory_per_task`: {e}"));
                        ok = false;
                    }
                },
                None => ok = false,
            }
        }
        if let Some(n) = map.get_node("retries") {
            match self.uint(n, "resources.retries", 0, 20) {
                Some(v) => r.retries = v as u32,
                None => ok = false,
            }
        }
        ok.then_some(r)
    }
}
