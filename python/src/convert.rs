//! Python values to an [`Event`], on the native side.
//!
//! Every write path (sync, awaitable, batch, fire-and-forget) builds its
//! event here, so they accept and refuse exactly the same things:
//!
//! - ids are `str` (subclasses included); anything else is refused with the
//!   field named;
//! - the action is a `str` (a `str` enum such as `enforcelog.Action`
//!   included), parsed case-insensitively by the Rust API, or any other
//!   `enum.Enum` member, read by its `str` value or else its name;
//! - `details` is walked straight into the JSON map the store keeps, in the
//!   dict's order, without JSON text in between. What the walk does not
//!   cover exactly (non-`str` keys, mappings that are not dicts, other
//!   types, nesting deeper than the store keeps) goes through the Python
//!   encoder (`enforcelog._store._details_json`), which decides as it always
//!   has: the fast path changes speed, never answers. An integer outside
//!   the 64-bit range is refused on both paths: the store would keep the
//!   nearest float.
//!
//! Invariant: the walk recurses at most [`DETAILS_MAX_DEPTH`] + 1 levels
//! (then it hands over to the encoder), so a self-containing dict or a
//! hostile nesting cannot overflow the stack.

use enforcelog::event::{details_from_json, DETAILS_MAX_DEPTH};
use enforcelog::{Action, Error, Event, EventError};
use std::ffi::c_char;

use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyDict, PyFloat, PyInt, PyList, PyString, PyTuple};
use serde_json::{Map, Number, Value};

use crate::to_py_err;

/// An `InvalidEventError` naming `field`.
pub(crate) fn invalid(py: Python<'_>, field: &str, message: String) -> PyErr {
    crate::py_error(
        py,
        "InvalidEventError",
        format!("{field}: {message}"),
        Some(field),
    )
}

/// The UTF-8 text of a `str`, borrowed from the object: nothing allocated.
///
/// PyO3's abi3-py39 build reads a `str` through a new `bytes` object per
/// call (`PyUnicode_AsUTF8AndSize` entered the limited API only in 3.10),
/// and an event has a dozen strings. CPython has exported that function,
/// with this signature, since 3.3, so the one abi3 wheel can call it on
/// every version it supports. A `str` that is not valid UTF-8 (a lone
/// surrogate) raises `UnicodeEncodeError`, as PyO3's own reading does.
fn utf8<'a>(s: &'a Bound<'_, PyString>) -> PyResult<&'a str> {
    extern "C" {
        fn PyUnicode_AsUTF8AndSize(
            unicode: *mut ffi::PyObject,
            size: *mut ffi::Py_ssize_t,
        ) -> *const c_char;
    }
    let mut len: ffi::Py_ssize_t = 0;
    // SAFETY: `s` is a live `str` (the type is checked by the downcast that
    // made the `Bound<PyString>`) and we hold the GIL (`Bound` proves it);
    // `len` is a valid place for the length.
    let data = unsafe { PyUnicode_AsUTF8AndSize(s.as_ptr(), &mut len) };
    if data.is_null() {
        return Err(PyErr::fetch(s.py()));
    }
    let len = usize::try_from(len).map_err(|_| PyErr::fetch(s.py()))?;
    // SAFETY: on success CPython returns `len` bytes of valid UTF-8 that
    // the `str` owns (its ASCII data, or a UTF-8 copy it caches) and frees
    // only with itself; `s` outlives the borrow by the signature.
    Ok(
        unsafe {
            std::str::from_utf8_unchecked(std::slice::from_raw_parts(data.cast::<u8>(), len))
        },
    )
}

fn type_name(value: &Bound<'_, PyAny>) -> String {
    value
        .get_type()
        .name()
        .map(|n| n.to_string())
        .unwrap_or_else(|_| "?".into())
}

fn id(py: Python<'_>, field: &str, value: &Bound<'_, PyAny>) -> PyResult<String> {
    match value.downcast::<PyString>() {
        Ok(s) => Ok(utf8(s)?.to_owned()),
        Err(_) => Err(invalid(
            py,
            field,
            format!("expected a str, got {}", type_name(value)),
        )),
    }
}

/// The action's text: a `str`, or an enum member's `str` value or name.
fn action_text(py: Python<'_>, value: &Bound<'_, PyAny>) -> PyResult<String> {
    if let Ok(s) = value.downcast::<PyString>() {
        return Ok(utf8(s)?.to_owned());
    }
    let enum_type = py.import("enum")?.getattr("Enum")?;
    if value.is_instance(&enum_type)? {
        let inner = value.getattr("value")?;
        let text = match inner.downcast::<PyString>() {
            Ok(s) => utf8(s)?.to_owned(),
            Err(_) => value.getattr("name")?.extract::<String>()?,
        };
        return Ok(text);
    }
    Err(invalid(
        py,
        "action",
        format!("expected a str or an enum member, got {}", type_name(value)),
    ))
}

/// `details` as a JSON map: the walk, or the Python encoder where the walk
/// would not give exactly its answer.
fn details(py: Python<'_>, value: &Bound<'_, PyAny>) -> PyResult<Map<String, Value>> {
    if let Ok(dict) = value.downcast::<PyDict>() {
        if let Some(map) = walk_dict(dict, 1)? {
            return Ok(map);
        }
    }
    let text: String = py
        .import("enforcelog._store")?
        .getattr("_details_json")?
        .call1((value,))?
        .extract()?;
    details_from_json(&text).map_err(|e| to_py_err(py, &Error::from(e)))
}

/// `None` means "not exactly representable here": use the encoder.
fn walk_dict(dict: &Bound<'_, PyDict>, depth: usize) -> PyResult<Option<Map<String, Value>>> {
    if depth > DETAILS_MAX_DEPTH {
        return Ok(None);
    }
    // A snapshot: the walk allocates, an allocation may run the garbage
    // collector, and its callbacks may change the dict, which PyO3's
    // iterator answers with a panic.
    let items = dict.items();
    let mut map = Map::with_capacity(items.len());
    for pair in items.iter() {
        let (key, item): (Bound<'_, PyAny>, Bound<'_, PyAny>) = pair.extract()?;
        let Ok(key) = key.downcast::<PyString>() else {
            return Ok(None);
        };
        let Some(item) = walk(&item, depth)? else {
            return Ok(None);
        };
        map.insert(utf8(key)?.to_owned(), item);
    }
    Ok(Some(map))
}

fn walk(value: &Bound<'_, PyAny>, depth: usize) -> PyResult<Option<Value>> {
    if value.is_none() {
        return Ok(Some(Value::Null));
    }
    if let Ok(s) = value.downcast::<PyString>() {
        return Ok(Some(Value::String(utf8(s)?.to_owned())));
    }
    // Before `int`: `bool` is a subclass of it.
    if let Ok(b) = value.downcast::<PyBool>() {
        return Ok(Some(Value::Bool(b.is_true())));
    }
    if value.downcast::<PyInt>().is_ok() {
        if let Ok(i) = value.extract::<i64>() {
            return Ok(Some(Value::Number(i.into())));
        }
        if let Ok(u) = value.extract::<u64>() {
            return Ok(Some(Value::Number(u.into())));
        }
        // Stored, it would come back as the nearest float: refused instead.
        return Err(int_out_of_range(value));
    }
    if let Ok(f) = value.downcast::<PyFloat>() {
        // NaN and the infinities are not JSON: the encoder refuses them.
        return Ok(Number::from_f64(f.value()).map(Value::Number));
    }
    if let Ok(d) = value.downcast::<PyDict>() {
        return Ok(walk_dict(d, depth + 1)?.map(Value::Object));
    }
    let walk_items = |items: Vec<Bound<'_, PyAny>>| -> PyResult<Option<Value>> {
        if depth + 1 > DETAILS_MAX_DEPTH {
            return Ok(None);
        }
        let mut out = Vec::with_capacity(items.len());
        for item in &items {
            match walk(item, depth + 1)? {
                Some(v) => out.push(v),
                None => return Ok(None),
            }
        }
        Ok(Some(Value::Array(out)))
    };
    if let Ok(l) = value.downcast::<PyList>() {
        return walk_items(l.iter().collect());
    }
    if let Ok(t) = value.downcast::<PyTuple>() {
        return walk_items(t.iter().collect());
    }
    Ok(None)
}

/// `InvalidEventError` for an integer the details cannot keep exactly.
fn int_out_of_range(value: &Bound<'_, PyAny>) -> PyErr {
    let text = value.str().map(|s| s.to_string()).unwrap_or_default();
    let shown: String = text.chars().take(40).collect();
    let more = if text.chars().count() > 40 { "..." } else { "" };
    invalid(
        value.py(),
        "details",
        format!("the integer {shown}{more} is outside the 64-bit range details keep exactly"),
    )
}

/// The event the Python arguments describe, or the exception to raise.
pub(crate) fn event(
    py: Python<'_>,
    tenant_id: &Bound<'_, PyAny>,
    rule_id: &Bound<'_, PyAny>,
    action: &Bound<'_, PyAny>,
    run_id: Option<&Bound<'_, PyAny>>,
    details_value: Option<&Bound<'_, PyAny>>,
    at_us: Option<i64>,
) -> PyResult<Event> {
    let tenant_id = id(py, "tenant_id", tenant_id)?;
    let rule_id = id(py, "rule_id", rule_id)?;
    let action: Action = action_text(py, action)?
        .parse()
        .map_err(|e: EventError| to_py_err(py, &Error::from(e)))?;
    let mut event = Event::new(tenant_id, rule_id, action);
    if let Some(run_id) = run_id.filter(|r| !r.is_none()) {
        event = event.with_run_id(id(py, "run_id", run_id)?);
    }
    if let Some(value) = details_value.filter(|d| !d.is_none()) {
        event = event.with_details(details(py, value)?);
    }
    if let Some(at_us) = at_us {
        event = event.at_us(at_us);
    }
    Ok(event)
}
