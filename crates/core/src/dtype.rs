use std::fmt;

use serde::{Deserialize, Serialize};

use crate::CoreError;

/// Element types a recording may hold. Names follow the Zarr v3 data type names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Dtype {
    Uint8,
    Uint16,
    Uint32,
    Uint64,
    Int8,
    Int16,
    Int32,
    Int64,
    Float32,
    Float64,
}

impl Dtype {
    /// All supported types, in a stable order.
    pub const ALL: [Dtype; 10] = [
        Dtype::Uint8,
        Dtype::Uint16,
        Dtype::Uint32,
        Dtype::Uint64,
        Dtype::Int8,
        Dtype::Int16,
        Dtype::Int32,
        Dtype::Int64,
        Dtype::Float32,
        Dtype::Float64,
    ];

    /// The Zarr v3 name (`uint16`, `float32`, ...).
    pub fn name(self) -> &'static str {
        match self {
            Dtype::Uint8 => "uint8",
            Dtype::Uint16 => "uint16",
            Dtype::Uint32 => "uint32",
            Dtype::Uint64 => "uint64",
            Dtype::Int8 => "int8",
            Dtype::Int16 => "int16",
            Dtype::Int32 => "int32",
            Dtype::Int64 => "int64",
            Dtype::Float32 => "float32",
            Dtype::Float64 => "float64",
        }
    }

    /// Parses a Zarr v3 name or a numpy-style short name (`u2`, `<u2`, `f4`, ...).
    pub fn parse(name: &str) -> Result<Dtype, CoreError> {
        let trimmed = name.trim_start_matches(['<', '>', '|', '=']);
        let dtype = match trimmed {
            "uint8" | "u1" => Dtype::Uint8,
            "uint16" | "u2" => Dtype::Uint16,
            "uint32" | "u4" => Dtype::Uint32,
            "uint64" | "u8" => Dtype::Uint64,
            "int8" | "i1" => Dtype::Int8,
            "int16" | "i2" => Dtype::Int16,
            "int32" | "i4" => Dtype::Int32,
            "int64" | "i8" => Dtype::Int64,
            "float32" | "f4" => Dtype::Float32,
            "float64" | "f8" => Dtype::Float64,
            _ => return Err(CoreError::UnsupportedDtype(name.to_string())),
        };
        Ok(dtype)
    }

    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            Dtype::Uint8 | Dtype::Int8 => 1,
            Dtype::Uint16 | Dtype::Int16 => 2,
            Dtype::Uint32 | Dtype::Int32 | Dtype::Float32 => 4,
            Dtype::Uint64 | Dtype::Int64 | Dtype::Float64 => 8,
        }
    }

    /// True for floating-point types.
    pub fn is_float(self) -> bool {
        matches!(self, Dtype::Float32 | Dtype::Float64)
    }

    /// The largest representable value for integer types (the detector's saturation level), `None`
    /// for floats, whose saturation level is not defined by the type.
    pub fn saturation_value(self) -> Option<f64> {
        match self {
            Dtype::Uint8 => Some(f64::from(u8::MAX)),
            Dtype::Uint16 => Some(f64::from(u16::MAX)),
            Dtype::Uint32 => Some(f64::from(u32::MAX)),
            Dtype::Uint64 => Some(u64::MAX as f64),
            Dtype::Int8 => Some(f64::from(i8::MAX)),
            Dtype::Int16 => Some(f64::from(i16::MAX)),
            Dtype::Int32 => Some(f64::from(i32::MAX)),
            Dtype::Int64 => Some(i64::MAX as f64),
            Dtype::Float32 | Dtype::Float64 => None,
        }
    }
}

impl fmt::Display for Dtype {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for d in Dtype::ALL {
            assert_eq!(Dtype::parse(d.name()).unwrap(), d);
        }
        assert_eq!(Dtype::parse("<u2").unwrap(), Dtype::Uint16);
        assert_eq!(Dtype::parse("|u1").unwrap(), Dtype::Uint8);
        assert!(matches!(
            Dtype::parse("complex64"),
            Err(CoreError::UnsupportedDtype(_))
        ));
    }
}
