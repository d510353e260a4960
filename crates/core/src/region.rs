use serde::{Deserialize, Serialize};

use crate::CoreError;

/// One region of interest in the neurofinder convention: a list of `[row, col]` pixel coordinates.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Region {
    pub coordinates: Vec<[u32; 2]>,
}

/// Parses a neurofinder `regions.json` (a list of `{"coordinates": [[row, col], ...]}`).
pub fn regions_from_json(text: &str) -> Result<Vec<Region>, CoreError> {
    serde_json::from_str(text).map_err(|e| CoreError::InvalidRegions(e.to_string()))
}

/// Writes regions as neurofinder JSON.
pub fn regions_to_json(regions: &[Region]) -> String {
    // Serialising plain integers cannot fail.
    serde_json::to_string(regions).unwrap_or_else(|_| "[]".to_string())
}

/// Centroid `(row, col)` of a region, `None` for an empty region.
pub fn centroid(region: &Region) -> Option<(f64, f64)> {
    if region.coordinates.is_empty() {
        return None;
    }
    let n = region.coordinates.len() as f64;
    let (sr, sc) = region.coordinates.iter().fold((0.0, 0.0), |(r, c), p| {
        (r + f64::from(p[0]), c + f64::from(p[1]))
    });
    Some((sr / n, sc / n))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_neurofinder_json() {
        let r = regions_from_json(r#"[{"coordinates": [[1, 2], [3, 4]]}]"#).unwrap();
        assert_eq!(r[0].coordinates, vec![[1, 2], [3, 4]]);
        assert_eq!(centroid(&r[0]), Some((2.0, 3.0)));
        assert!(regions_from_json(r#"{"x": 1}"#).is_err());
        let back = regions_from_json(&regions_to_json(&r)).unwrap();
        assert_eq!(back, r);
    }
}
