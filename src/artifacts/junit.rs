//! Merging the workers' JUnit XML files (`--junitxml`) into the one document single-process
//! pytest would write.
//!
//! Each worker writes `<testsuites><testsuite>…</testsuite></testsuites>` with the testcases
//! it ran, and also the collection errors and collection skips, which every worker reports
//! because every worker collects the whole suite. The merge keeps each testcase once, copied
//! event by event (attributes, text, CDATA and character references untouched), sorts them
//! into run order, and recomputes the suite's counts the way pytest's `junitxml.py` does.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use anyhow::Context;
use quick_xml::events::attributes::Attribute;
use quick_xml::events::{BytesEnd, BytesStart, Event};
use quick_xml::name::QName;
use quick_xml::{Reader, Writer, XmlVersion};

/// Why the workers' documents could not be merged. `doc` is the index in `docs`.
#[derive(Debug, thiserror::Error)]
pub(crate) enum JunitError {
    #[error("no JUnit XML documents to merge")]
    NoDocuments,
    #[error("JUnit XML document {doc}: invalid XML at byte {position}: {message}")]
    Xml {
        doc: usize,
        position: u64,
        message: String,
    },
    #[error("JUnit XML document {doc}: the root element is <{root}>, not <testsuites>")]
    UnexpectedRoot { doc: usize, root: String },
    #[error("JUnit XML document {doc}: no <testsuite> element")]
    NoTestsuite { doc: usize },
    #[error("writing the merged JUnit XML document: {0}")]
    Write(String),
}

impl JunitError {
    /// The index of the document at fault, if one is.
    pub(crate) fn doc(&self) -> Option<usize> {
        match self {
            JunitError::Xml { doc, .. }
            | JunitError::UnexpectedRoot { doc, .. }
            | JunitError::NoTestsuite { doc } => Some(*doc),
            JunitError::NoDocuments | JunitError::Write(_) => None,
        }
    }
}

/// Merges the workers' documents (in worker order) into one, as single-process pytest writes it.
///
/// - The root `<testsuites>` and the `<testsuite>`'s `name`, `hostname` and other attributes
///   are the first document's; `time` is the longest worker's (they run in parallel) and
///   `timestamp` the earliest (compared as text: the workers share one clock and UTC offset).
/// - `errors`, `failures` and `skipped` count the `<error>`, `<failure>` and `<skipped>`
///   children of the kept testcases, as pytest counts the nodes it appends. `tests` adds the
///   passes, which leave no child: per worker, `tests - errors - failures - skipped` (pytest's
///   passes minus its "failed, then errored in teardown" double counts, so a pass followed
///   by a teardown error counts twice, as in pytest).
/// - A testcase seen in an earlier document is dropped: a collection error or collection skip
///   by its classname and name, any other testcase when equal but for its `time`.
/// - Suite `<property>` elements: each (name, value) as many times as the worker that
///   recorded it most often (a session fixture's property once, not once per worker).
/// - Order: testcases are sorted by the position in `order` of the node id they come from
///   (classname and name as pytest derives them from a node id). Unmatched testcases that
///   precede a document's first matched one (collection reports) come first, the other
///   unmatched ones last, each group in worker order. With `junit_prefix` set nothing
///   matches, and the testcases stay in worker order.
pub(crate) fn merge(docs: &[String], order: &[String]) -> Result<String, JunitError> {
    let parsed = docs
        .iter()
        .enumerate()
        .map(|(doc, text)| parse(doc, text))
        .collect::<Result<Vec<_>, _>>()?;
    let first = parsed.first().ok_or(JunitError::NoDocuments)?;
    let positions = order_positions(order);

    let mut kept: Vec<(SortKey, &Testcase)> = Vec::new();
    let mut seen: HashSet<Vec<u8>> = HashSet::new();
    let mut passes: i64 = 0;
    for (doc, parsed_doc) in parsed.iter().enumerate() {
        passes += parsed_doc.passes();
        let mut identities = Vec::with_capacity(parsed_doc.testcases.len());
        let mut matched_before = false;
        for (index, testcase) in parsed_doc.testcases.iter().enumerate() {
            let identity = testcase.identity()?;
            let address = (testcase.classname.clone(), testcase.name.clone());
            let position = positions.get(&address).copied();
            matched_before |= position.is_some();
            if seen.contains(&identity) {
                if testcase.outcomes.total() == 0 {
                    passes -= 1;
                }
            } else {
                let group = match (position, matched_before) {
                    (Some(_), _) => 1,
                    (None, false) => 0,
                    (None, true) => 2,
                };
                let key = (group, position.unwrap_or(0), doc, index);
                kept.push((key, testcase));
            }
            identities.push(identity);
        }
        seen.extend(identities);
    }
    kept.sort_by_key(|(key, _)| *key);

    let mut counts = Outcomes::default();
    for (_, testcase) in &kept {
        counts.add(&testcase.outcomes);
    }
    let suite = SuiteAttrs {
        tests: passes.max(0) + counts.total(),
        errors: counts.errors,
        failures: counts.failures,
        skipped: counts.skipped,
        time: parsed
            .iter()
            .filter_map(|p| p.suite_attr("time")?.parse::<f64>().ok())
            .reduce(f64::max)
            .map(|secs| format!("{secs:.3}")),
        timestamp: parsed
            .iter()
            .filter_map(|p| p.suite_attr("timestamp"))
            .min(),
    };
    let properties = merged_properties(&parsed);
    write_document(first, &suite, &properties, kept.iter().map(|(_, t)| *t))
}

/// Reads the existing worker files among `paths` (missing or empty ones skipped: a worker
/// that crashed before writing its document),
/// merges, and writes atomically (temp file + rename) to `dest`, creating its parent
/// directories as pytest does. Returns Ok(false) if no worker file existed.
pub(crate) fn merge_files(
    paths: &[PathBuf],
    extra: Option<String>,
    order: &[String],
    dest: &Path,
) -> anyhow::Result<bool> {
    let mut docs = Vec::new();
    let mut read = Vec::new();
    for path in paths {
        match std::fs::read_to_string(path) {
            Ok(text) if text.is_empty() => {}
            Ok(text) => {
                docs.push(text);
                read.push(path);
            }
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
            Err(err) => {
                return Err(err).with_context(|| format!("reading {}", path.display()));
            }
        }
    }
    docs.extend(extra);
    if docs.is_empty() {
        return Ok(false);
    }
    let merged = merge(&docs, order).map_err(|err| match err.doc().and_then(|i| read.get(i)) {
        Some(path) => anyhow::Error::new(err).context(format!("merging {}", path.display())),
        None => anyhow::Error::new(err),
    })?;
    crate::atomic::write(dest, merged.as_bytes())?;
    Ok(true)
}

/// (group, position in `order`, document, index in document): see [`merge`].
type SortKey = (u8, usize, usize, usize);

/// One worker's document, borrowing from its text.
#[derive(Default)]
struct Parsed<'a> {
    /// The root `<testsuites>` start tag (none when the root is a bare `<testsuite>`).
    root: Option<BytesStart<'a>>,
    /// The first `<testsuite>` start tag.
    suite: Option<BytesStart<'a>>,
    /// The suite-level `<property>` elements.
    properties: Vec<Property<'a>>,
    testcases: Vec<Testcase<'a>>,
}

impl Parsed<'_> {
    /// An attribute of the `<testsuite>`, unescaped.
    fn suite_attr(&self, key: &str) -> Option<String> {
        attr(self.suite.as_ref()?, key)
    }

    /// The passes, which leave no trace but the suite's `tests` count; counted as
    /// testcases without an outcome child when the counts are missing.
    fn passes(&self) -> i64 {
        let count = |key| self.suite_attr(key)?.parse::<i64>().ok();
        match (
            count("tests"),
            count("errors"),
            count("failures"),
            count("skipped"),
        ) {
            (Some(tests), Some(errors), Some(failures), Some(skipped)) => {
                tests - errors - failures - skipped
            }
            _ => {
                let passed = self.testcases.iter().filter(|t| t.outcomes.total() == 0);
                i64::try_from(passed.count()).unwrap_or(i64::MAX)
            }
        }
    }
}

/// A suite-level `<property>`: its (name, value), unescaped, and its events.
struct Property<'a> {
    key: (String, String),
    events: Vec<Event<'a>>,
}

/// A `<testcase>` element: its events from start to end tag, and what they say.
struct Testcase<'a> {
    events: Vec<Event<'a>>,
    classname: String,
    name: String,
    outcomes: Outcomes,
    /// A collection error or skip (`message="collection failure"` or `"collection skipped"`).
    collection: bool,
}

impl<'a> Testcase<'a> {
    fn new(events: Vec<Event<'a>>) -> Self {
        let (classname, name) = match events.first() {
            Some(Event::Start(e) | Event::Empty(e)) => (
                attr(e, "classname").unwrap_or_default(),
                attr(e, "name").unwrap_or_default(),
            ),
            _ => Default::default(),
        };
        let mut outcomes = Outcomes::default();
        let mut collection = false;
        let mut depth = 0usize;
        for event in &events {
            let child = match event {
                Event::Start(e) => {
                    depth += 1;
                    (depth == 2).then_some(e)
                }
                Event::Empty(e) => (depth == 1).then_some(e),
                Event::End(_) => {
                    depth = depth.saturating_sub(1);
                    None
                }
                _ => None,
            };
            if let Some(e) = child {
                let message = attr(e, "message");
                match e.local_name().as_ref() {
                    "error" => {
                        outcomes.errors += 1;
                        collection |= message.as_deref() == Some("collection failure");
                    }
                    "failure" => outcomes.failures += 1,
                    "skipped" => {
                        outcomes.skipped += 1;
                        collection |= message.as_deref() == Some("collection skipped");
                    }
                    _ => {}
                }
            }
        }
        Testcase {
            events,
            classname,
            name,
            outcomes,
            collection,
        }
    }

    /// What makes two workers' testcases the same one (see [`merge`]).
    fn identity(&self) -> Result<Vec<u8>, JunitError> {
        if self.collection {
            return Ok(format!("collection\0{}\0{}", self.classname, self.name).into_bytes());
        }
        let mut writer = Writer::new(b"testcase\0".to_vec());
        for (i, event) in self.events.iter().enumerate() {
            let event = match event {
                Event::Start(e) if i == 0 => Event::Start(without_time(e)),
                Event::Empty(e) if i == 0 => Event::Empty(without_time(e)),
                other => other.borrow(),
            };
            writer
                .write_event(event)
                .map_err(|e| JunitError::Write(e.to_string()))?;
        }
        Ok(writer.into_inner())
    }
}

/// A start tag without its `time` attribute, the others raw.
fn without_time(start: &BytesStart) -> BytesStart<'static> {
    let mut copy = BytesStart::new(start.name().0.to_owned());
    for attr in start.attributes().flatten() {
        if attr.key.0 != "time" {
            copy.push_attribute(attr);
        }
    }
    copy
}

/// Counts of a testcase's or the suite's outcome elements.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
struct Outcomes {
    errors: i64,
    failures: i64,
    skipped: i64,
}

impl Outcomes {
    fn total(&self) -> i64 {
        self.errors + self.failures + self.skipped
    }

    fn add(&mut self, other: &Outcomes) {
        self.errors += other.errors;
        self.failures += other.failures;
        self.skipped += other.skipped;
    }
}

/// The merged `<testsuite>`'s computed attributes.
struct SuiteAttrs {
    tests: i64,
    errors: i64,
    failures: i64,
    skipped: i64,
    time: Option<String>,
    timestamp: Option<String>,
}

/// Where an element being copied goes when its end tag is read.
enum Slot {
    Testcase,
    Property,
}

/// Reads one document, checking it is well-formed XML.
fn parse(doc: usize, text: &str) -> Result<Parsed<'_>, JunitError> {
    let mut reader = Reader::from_str(text);
    let mut parsed = Parsed::default();
    // Local names of the open elements.
    let mut stack: Vec<String> = Vec::new();
    // The element being copied: its slot, its depth (the stack's length inside it), events.
    let mut copying: Option<(Slot, usize, Vec<Event>)> = None;
    loop {
        let event = reader.read_event().map_err(|e| JunitError::Xml {
            doc,
            position: reader.error_position(),
            message: e.to_string(),
        })?;
        if let Err(message) = check(&event) {
            return Err(JunitError::Xml {
                doc,
                position: reader.buffer_position(),
                message,
            });
        }
        if matches!(event, Event::Eof) {
            break;
        }
        if let Some((slot, depth, events)) = copying.as_mut() {
            match &event {
                Event::Start(e) => stack.push(local_name(e)),
                Event::End(_) => {
                    stack.pop();
                }
                _ => {}
            }
            events.push(event);
            if stack.len() < *depth {
                let events = std::mem::take(events);
                match slot {
                    Slot::Testcase => parsed.testcases.push(Testcase::new(events)),
                    Slot::Property => parsed.properties.push(Property::new(events)),
                }
                copying = None;
            }
            continue;
        }
        match event {
            Event::Start(ref e) | Event::Empty(ref e) => {
                let name = local_name(e);
                let parent = stack.last().map(String::as_str);
                let grandparent = stack.len().checked_sub(2).map(|i| stack[i].as_str());
                let slot = match (grandparent, parent, name.as_str()) {
                    (_, None, "testsuites") => {
                        parsed.root = Some(e.clone());
                        None
                    }
                    (_, None | Some("testsuites"), "testsuite") => {
                        if parsed.suite.is_none() {
                            parsed.suite = Some(e.clone());
                        }
                        None
                    }
                    (_, None, _) => {
                        return Err(JunitError::UnexpectedRoot { doc, root: name });
                    }
                    (_, Some("testsuite"), "testcase") => Some(Slot::Testcase),
                    (Some("testsuite"), Some("properties"), "property") => Some(Slot::Property),
                    _ => None,
                };
                let is_start = matches!(event, Event::Start(_));
                match (slot, is_start) {
                    (Some(slot), true) => copying = Some((slot, stack.len() + 1, vec![event])),
                    (Some(Slot::Testcase), false) => {
                        parsed.testcases.push(Testcase::new(vec![event]))
                    }
                    (Some(Slot::Property), false) => {
                        parsed.properties.push(Property::new(vec![event]))
                    }
                    (None, _) => {}
                }
                if is_start {
                    stack.push(name);
                }
            }
            Event::End(_) => {
                stack.pop();
            }
            _ => {}
        }
    }
    if let Some(open) = stack.last() {
        return Err(JunitError::Xml {
            doc,
            position: reader.buffer_position(),
            message: format!("unexpected end of document: <{open}> is not closed"),
        });
    }
    if parsed.suite.is_none() {
        return Err(JunitError::NoTestsuite { doc });
    }
    Ok(parsed)
}

impl<'a> Property<'a> {
    fn new(events: Vec<Event<'a>>) -> Self {
        let key = match events.first() {
            Some(Event::Start(e) | Event::Empty(e)) => (
                attr(e, "name").unwrap_or_default(),
                attr(e, "value").unwrap_or_default(),
            ),
            _ => Default::default(),
        };
        Property { key, events }
    }
}

/// Checks what the reader leaves unchecked and the writer would copy as is: attributes,
/// and entity references (only the predefined ones exist without a DTD).
fn check(event: &Event) -> Result<(), String> {
    match event {
        Event::Start(e) | Event::Empty(e) => {
            for attr in e.attributes() {
                let attr = attr.map_err(|err| err.to_string())?;
                attr.normalized_value(XmlVersion::Implicit1_0)
                    .map_err(|err| err.to_string())?;
            }
            Ok(())
        }
        Event::GeneralRef(r) if r.is_char_ref() => match r.resolve_char_ref() {
            Ok(Some(_)) => Ok(()),
            Ok(None) => Err(format!("invalid character reference &{};", &**r)),
            Err(err) => Err(err.to_string()),
        },
        Event::GeneralRef(r) => match &**r {
            "lt" | "gt" | "amp" | "apos" | "quot" => Ok(()),
            other => Err(format!("undefined entity &{other};")),
        },
        _ => Ok(()),
    }
}

fn local_name(e: &BytesStart) -> String {
    e.local_name().as_ref().to_owned()
}

/// An attribute's value, unescaped.
fn attr(e: &BytesStart, key: &str) -> Option<String> {
    let attr = e.try_get_attribute(key).ok()??;
    let value = attr.normalized_value(XmlVersion::Implicit1_0).ok()?;
    Some(value.into_owned())
}

/// Each node id's (classname, name), as pytest writes them, to its first position.
fn order_positions(order: &[String]) -> HashMap<(String, String), usize> {
    let mut positions = HashMap::with_capacity(order.len());
    for (position, nodeid) in order.iter().enumerate() {
        positions.entry(junit_address(nodeid)).or_insert(position);
    }
    positions
}

/// The (classname, name) pytest writes for a node id (`mangle_test_address`), the name
/// escaped as `bin_xml_escape` does. Without `junit_prefix`.
fn junit_address(nodeid: &str) -> (String, String) {
    let (path, params) = nodeid.split_at(nodeid.find('[').unwrap_or(nodeid.len()));
    let mut names: Vec<String> = path.split("::").map(str::to_owned).collect();
    if let Some(file) = names.first_mut() {
        let dotted = file.replace('/', ".");
        *file = dotted.strip_suffix(".py").unwrap_or(&dotted).to_owned();
    }
    let name = names.pop().unwrap_or_default() + params;
    (names.join("."), bin_xml_escape(&name))
}

/// pytest's `bin_xml_escape`: characters it deems invalid in XML become the visible text
/// `#xNN`. Like pytest, this includes DEL and the characters beyond U+FFFF (its regex
/// meant to allow them but does not).
fn bin_xml_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match u32::from(c) {
            0x09 | 0x0A | 0x0D | 0x20..=0x7E | 0x80..=0xD7FF | 0xE000..=0xFFFD => out.push(c),
            code if code <= 0xFF => out.push_str(&format!("#x{code:02X}")),
            code => out.push_str(&format!("#x{code:04X}")),
        }
    }
    out
}

/// The suite properties: each (name, value) as many times as one document has it at most,
/// in order of first appearance.
fn merged_properties<'d, 'a>(parsed: &'d [Parsed<'a>]) -> Vec<&'d Property<'a>> {
    let mut kept_counts: HashMap<&(String, String), usize> = HashMap::new();
    let mut kept = Vec::new();
    for doc in parsed {
        let mut here: HashMap<&(String, String), usize> = HashMap::new();
        for property in &doc.properties {
            let n = here.entry(&property.key).or_insert(0);
            *n += 1;
            let most = kept_counts.entry(&property.key).or_insert(0);
            if *n > *most {
                *most = *n;
                kept.push(property);
            }
        }
    }
    kept
}

/// Writes the merged document as pytest does: the declaration, then one line of XML.
fn write_document<'t, 'a: 't>(
    first: &Parsed,
    suite: &SuiteAttrs,
    properties: &[&Property],
    testcases: impl Iterator<Item = &'t Testcase<'a>>,
) -> Result<String, JunitError> {
    let mut writer = Writer::new(br#"<?xml version="1.0" encoding="utf-8"?>"#.to_vec());
    let root = first
        .root
        .as_ref()
        .map_or_else(|| BytesStart::new("testsuites"), BytesStart::borrow);
    let suite_start = suite_start(first.suite.as_ref(), suite);
    let mut events: Vec<Event> = vec![Event::Start(root.borrow()), Event::Start(suite_start)];
    if !properties.is_empty() {
        events.push(Event::Start(BytesStart::new("properties")));
        events.extend(
            properties
                .iter()
                .flat_map(|p| p.events.iter().map(Event::borrow)),
        );
        events.push(Event::End(BytesEnd::new("properties")));
    }
    events.extend(testcases.flat_map(|t| t.events.iter().map(Event::borrow)));
    events.push(Event::End(BytesEnd::new("testsuite")));
    events.push(Event::End(root.to_end().into_owned()));
    for event in events {
        writer
            .write_event(event)
            .map_err(|e| JunitError::Write(e.to_string()))?;
    }
    String::from_utf8(writer.into_inner()).map_err(|e| JunitError::Write(e.to_string()))
}

/// The merged `<testsuite>` start tag: the first document's attributes in their order, the
/// computed ones replaced (or added in pytest's order when missing).
fn suite_start(first: Option<&BytesStart>, suite: &SuiteAttrs) -> BytesStart<'static> {
    let mut computed: Vec<(&str, Option<String>)> = vec![
        ("errors", Some(suite.errors.to_string())),
        ("failures", Some(suite.failures.to_string())),
        ("skipped", Some(suite.skipped.to_string())),
        ("tests", Some(suite.tests.to_string())),
        ("time", suite.time.clone()),
        ("timestamp", suite.timestamp.as_deref().map(escape)),
    ];
    let mut start = BytesStart::new("testsuite");
    for attr in first.into_iter().flat_map(|e| e.attributes().flatten()) {
        match computed.iter_mut().find(|(key, _)| *key == attr.key.0) {
            Some((key, value)) => {
                let value = value.take().map_or(attr.value, Cow::Owned);
                start.push_attribute(Attribute {
                    key: QName(key),
                    value,
                });
            }
            None => start.push_attribute(attr),
        }
    }
    for (key, value) in computed {
        if let Some(value) = value {
            start.push_attribute(Attribute {
                key: QName(key),
                value: Cow::Owned(value),
            });
        }
    }
    start
}

fn escape(text: &str) -> String {
    quick_xml::escape::escape(text).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The variants under tests/fixtures/junit (see its README).
    const VARIANTS: [&str; 3] = ["pytest-9.0.2", "pytest-9.0.2-xunit1", "pytest-8.3.5"];

    fn fixture(variant: &str, file: &str) -> String {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/junit")
            .join(variant)
            .join(file);
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    fn order(variant: &str) -> Vec<String> {
        fixture(variant, "order.txt")
            .lines()
            .map(str::to_owned)
            .collect()
    }

    /// A testcase as the tests see it: classname, name, and its outcome children's tags.
    #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
    struct Case {
        classname: String,
        name: String,
        outcomes: Vec<String>,
    }

    /// What a JUnit document says, read with quick-xml independently of the merge's code.
    #[derive(Debug, Default)]
    struct Summary {
        root: Vec<(String, String)>,
        suites: usize,
        suite: HashMap<String, String>,
        properties: Vec<(String, String)>,
        cases: Vec<Case>,
        system_out: Vec<String>,
        system_err: Vec<String>,
    }

    fn attrs(e: &BytesStart) -> Vec<(String, String)> {
        e.attributes()
            .map(|a| {
                let a = a.expect("attribute");
                let value = a.normalized_value(XmlVersion::Implicit1_0).expect("value");
                (a.key.0.to_owned(), value.into_owned())
            })
            .collect()
    }

    fn summary(xml: &str) -> Summary {
        let mut reader = Reader::from_str(xml);
        let mut s = Summary::default();
        let mut stack: Vec<String> = Vec::new();
        let mut text: Option<String> = None;
        loop {
            let event = reader.read_event().expect("well-formed XML");
            let (e, is_start) = match &event {
                Event::Start(e) => (Some(e), true),
                Event::Empty(e) => (Some(e), false),
                _ => (None, false),
            };
            if let Some(e) = e {
                let name = e.local_name().as_ref().to_owned();
                let parent = stack.last().map(String::as_str);
                match (parent, name.as_str()) {
                    (None, "testsuites") => s.root = attrs(e),
                    (Some("testsuites"), "testsuite") => {
                        s.suites += 1;
                        s.suite = attrs(e).into_iter().collect();
                    }
                    (Some("properties"), "property") if stack.len() == 3 => {
                        let a: HashMap<_, _> = attrs(e).into_iter().collect();
                        s.properties.push((a["name"].clone(), a["value"].clone()));
                    }
                    (Some("testsuite"), "testcase") => {
                        let a: HashMap<_, _> = attrs(e).into_iter().collect();
                        s.cases.push(Case {
                            classname: a["classname"].clone(),
                            name: a["name"].clone(),
                            outcomes: vec![],
                        });
                    }
                    (Some("testcase"), "error" | "failure" | "skipped") => {
                        s.cases
                            .last_mut()
                            .expect("case")
                            .outcomes
                            .push(name.clone());
                    }
                    (Some("testcase"), "system-out" | "system-err") if is_start => {
                        text = Some(String::new());
                    }
                    _ => {}
                }
                if is_start {
                    stack.push(name);
                }
            }
            match event {
                Event::Text(t) => {
                    if let Some(text) = text.as_mut() {
                        text.push_str(&t.xml10_content());
                    }
                }
                Event::GeneralRef(r) => {
                    if let Some(text) = text.as_mut() {
                        let c = match &*r {
                            "lt" => '<',
                            "gt" => '>',
                            "amp" => '&',
                            "quot" => '"',
                            "apos" => '\'',
                            _ => r.resolve_char_ref().expect("char ref").expect("char"),
                        };
                        text.push(c);
                    }
                }
                Event::End(_) => match stack.pop().as_deref() {
                    Some("system-out") => s.system_out.extend(text.take()),
                    Some("system-err") => s.system_err.extend(text.take()),
                    _ => {}
                },
                Event::Eof => break,
                _ => {}
            }
        }
        s
    }

    fn sorted(mut cases: Vec<Case>) -> Vec<Case> {
        cases.sort();
        cases
    }

    fn merged(variant: &str) -> String {
        let docs = [fixture(variant, "gw0.xml"), fixture(variant, "gw1.xml")];
        merge(&docs, &order(variant)).expect("merge")
    }

    #[test]
    fn merge_has_the_single_process_testcases_and_counts() {
        for variant in VARIANTS {
            let got = summary(&merged(variant));
            let want = summary(&fixture(variant, "all.xml"));
            assert_eq!(got.suites, 1, "{variant}");
            // 22 tests and 2 collection reports; the failure with a teardown error is
            // written as two testcases.
            assert_eq!(got.cases.len(), 25, "{variant}");
            assert_eq!(
                sorted(got.cases.clone()),
                sorted(want.cases.clone()),
                "{variant}"
            );
            for key in ["tests", "errors", "failures", "skipped", "name", "hostname"] {
                assert_eq!(got.suite[key], want.suite[key], "{variant}: {key}");
            }
            // pytest's count: the pass with a teardown error counts twice, the failure with a
            // teardown error (two testcases) once.
            let counts: Vec<&str> = ["tests", "errors", "failures", "skipped"]
                .iter()
                .map(|k| got.suite[*k].as_str())
                .collect();
            assert_eq!(counts, ["25", "4", "5", "4"], "{variant}");
            assert_eq!(got.root, want.root, "{variant}");
        }
    }

    #[test]
    fn merge_sorts_the_testcases_into_run_order() {
        for variant in VARIANTS {
            let got = summary(&merged(variant));
            let want = summary(&fixture(variant, "all.xml"));
            assert_eq!(got.cases, want.cases, "{variant}");
            assert_eq!(got.cases[0].name, "tests.test_broken", "{variant}");
        }
    }

    #[test]
    fn merge_equals_single_process_pytest_byte_for_byte_but_the_time() {
        // The fixtures' times are fixed: the workers took 1.5s and 2.25s, the single
        // process 3s; the earliest worker started when the single process did.
        for variant in VARIANTS {
            let want =
                fixture(variant, "all.xml").replacen(r#" time="3.000""#, r#" time="2.250""#, 1);
            assert_eq!(merged(variant), want, "{variant}");
        }
    }

    #[test]
    fn merge_keeps_time_max_timestamp_min_and_suite_properties() {
        let got = summary(&merged("pytest-9.0.2"));
        assert_eq!(got.suite["time"], "2.250");
        assert_eq!(got.suite["timestamp"], "2025-01-01T10:00:00.500000+00:00");
        assert_eq!(got.suite["hostname"], "fixture-host");
        assert_eq!(got.root, [("name".to_owned(), "pytest tests".to_owned())]);
        // ARCH comes from a session fixture (in both workers): once. STORAGE was recorded
        // twice by one test: twice, as pytest writes it.
        let p = |n: &str, v: &str| (n.to_owned(), v.to_owned());
        assert_eq!(
            got.properties,
            [
                p("ARCH", "x86 <&>"),
                p("STORAGE", "ceph"),
                p("STORAGE", "ceph")
            ]
        );
        assert_eq!(
            got.properties,
            summary(&fixture("pytest-9.0.2", "all.xml")).properties
        );
        // pytest 8 writes no name on <testsuites>.
        assert!(summary(&merged("pytest-8.3.5")).root.is_empty());
    }

    #[test]
    fn merge_keeps_captured_output_and_testcase_properties() {
        for variant in VARIANTS {
            let xml = merged(variant);
            let got = summary(&xml);
            let want = summary(&fixture(variant, "all.xml"));
            assert_eq!(got.system_out, want.system_out, "{variant}");
            assert_eq!(got.system_err, want.system_err, "{variant}");
            assert!(got
                .system_out
                .iter()
                .any(|out| out.contains("printed to stdout: <&> ünïcödé #x1B[31mred#x1B[0m")));
            assert!(got
                .system_err
                .iter()
                .any(|e| e.contains("printed to stderr")));
            assert!(xml.contains(
                r#"<properties><property name="example_key" value="value &lt;&amp;&gt; ü" /></properties>"#
            ));
        }
    }

    #[test]
    fn collection_reports_are_kept_once() {
        for variant in VARIANTS {
            let gw1 = summary(&fixture(variant, "gw1.xml"));
            assert!(gw1.cases.iter().any(|c| c.name == "tests.test_broken"));
            let got = summary(&merged(variant));
            for module in ["tests.test_broken", "tests.test_modskip"] {
                let n = got.cases.iter().filter(|c| c.name == module).count();
                assert_eq!(n, 1, "{variant}: {module}");
            }
        }
    }

    #[test]
    fn one_document_merges_into_itself() {
        for variant in VARIANTS {
            let all = fixture(variant, "all.xml");
            assert_eq!(
                merge(std::slice::from_ref(&all), &order(variant)).unwrap(),
                all
            );
            assert_eq!(merge(std::slice::from_ref(&all), &[]).unwrap(), all);
        }
    }

    #[test]
    fn without_an_order_testcases_stay_in_worker_order() {
        let docs = [
            fixture("pytest-9.0.2", "gw1.xml"),
            fixture("pytest-9.0.2", "gw0.xml"),
        ];
        let got = summary(&merge(&docs, &[]).unwrap());
        let gw1 = summary(&docs[0]).cases;
        let gw0 = summary(&docs[1]).cases;
        let mut want = gw1.clone();
        want.extend(gw0.into_iter().filter(|c| !gw1.contains(c)));
        assert_eq!(got.cases, want);
        assert_eq!(got.suite["tests"], "25");
    }

    #[test]
    fn unmatched_testcases_after_the_first_match_go_last() {
        let doc = |cases: &str| {
            format!(
                r#"<?xml version="1.0" encoding="utf-8"?><testsuites><testsuite name="pytest" errors="0" failures="0" skipped="0" tests="2">{cases}</testsuite></testsuites>"#
            )
        };
        let docs = [
            doc(r#"<testcase classname="t" name="b" /><testcase classname="x" name="odd" />"#),
            doc(r#"<testcase classname="t" name="a" /><testcase classname="t" name="c" />"#),
        ];
        let order = ["t.py::a", "t.py::b", "t.py::c"].map(String::from);
        let got = summary(&merge(&docs, &order).unwrap());
        let names: Vec<&str> = got.cases.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["a", "b", "c", "odd"]);
        assert_eq!(got.suite["tests"], "4");
    }

    #[test]
    fn testcases_are_copied_verbatim() {
        let case = concat!(
            r#"<testcase classname="m" name="t[&lt;&amp;&gt;&#10;]" time="0.1" custom='q'>"#,
            r#"<!-- note --><failure message="a &quot;b&quot; &#27;"><![CDATA[raw <&> text]]>"#,
            "line &#27;[31m &#x1F600; ü\r\n</failure>",
            r#"<system-out>out &amp; more</system-out><properties><property name="k" value="v"/></properties></testcase>"#
        );
        let doc = format!(
            r#"<?xml version="1.0"?><testsuite name="old" tests="1" failures="1" errors="0" skipped="0">{case}</testsuite>"#
        );
        let out = merge(&[doc], &[]).unwrap();
        assert!(out.contains(case), "{out}");
        assert!(out.starts_with(r#"<?xml version="1.0" encoding="utf-8"?><testsuites><testsuite name="old" tests="1" failures="1" errors="0" skipped="0">"#), "{out}");
        assert!(
            out.ends_with("</testcase></testsuite></testsuites>"),
            "{out}"
        );
    }

    #[test]
    fn counts_are_computed_when_the_suite_has_none() {
        let doc = |cases: &str| format!("<testsuites><testsuite>{cases}</testsuite></testsuites>");
        let docs = [
            doc(
                r#"<testcase classname="a" name="p"/><testcase classname="a" name="f"><failure/></testcase>"#,
            ),
            doc(
                r#"<testcase classname="a" name="s"><skipped/><error message="failed on teardown with &quot;x&quot;"/></testcase>"#,
            ),
        ];
        let got = summary(&merge(&docs, &[]).unwrap());
        let counts: Vec<&str> = ["tests", "errors", "failures", "skipped"]
            .iter()
            .map(|k| got.suite[*k].as_str())
            .collect();
        assert_eq!(counts, ["4", "1", "1", "1"]);
        assert!(!got.suite.contains_key("time"));
    }

    #[test]
    fn identical_testcases_in_one_document_are_all_kept() {
        // pytest --keep-duplicates runs a test twice in one process: both are written.
        let case = r#"<testcase classname="a" name="t" time="0.001" />"#;
        let doc = format!(
            r#"<testsuites><testsuite tests="2" errors="0" failures="0" skipped="0">{case}{case}</testsuite></testsuites>"#
        );
        let got = summary(&merge(&[doc.clone(), doc], &[]).unwrap());
        assert_eq!(got.cases.len(), 2);
        assert_eq!(got.suite["tests"], "2");
    }

    #[test]
    fn bad_documents_are_errors() {
        let cases = [
            ("", "no <testsuite>"),
            ("not xml at all", "no <testsuite>"),
            ("<testsuites/>", "no <testsuite>"),
            ("<html><body/></html>", "root element is <html>"),
            ("<testsuites><testsuite>", "not closed"),
            ("<testsuites><testsuite></testsuites>", "invalid XML"),
            (
                "<testsuites><testsuite><testcase name=x/></testsuite></testsuites>",
                "invalid XML",
            ),
            (
                "<testsuites><testsuite><testcase>&nbsp;</testcase></testsuite></testsuites>",
                "undefined entity",
            ),
            (
                "<testsuites><testsuite><testcase>a & b</testcase></testsuite></testsuites>",
                "invalid XML",
            ),
            (
                "<testsuites><testsuite><testcase name='&bad;'/></testsuite></testsuites>",
                "invalid XML",
            ),
            (
                "<testsuites><testsuite><testcase>&#0;</testcase></testsuite></testsuites>",
                "invalid XML",
            ),
        ];
        let good = fixture("pytest-9.0.2", "gw0.xml");
        for (bad, expected) in cases {
            let err = merge(&[good.clone(), bad.to_owned()], &[]).unwrap_err();
            assert_eq!(err.doc(), Some(1), "{bad}");
            assert!(err.to_string().contains(expected), "{bad}: {err}");
        }
        let truncated = &good[..good.len() / 2];
        assert!(merge(&[truncated.to_owned()], &[]).is_err());
        assert!(matches!(merge(&[], &[]), Err(JunitError::NoDocuments)));
    }

    #[test]
    fn node_ids_map_to_junit_addresses_as_pytest_mangles_them() {
        let address = |id| junit_address(id);
        let pair = |c: &str, n: &str| (c.to_owned(), n.to_owned());
        assert_eq!(
            address("tests/test_a.py::TestX::test_y[1]"),
            pair("tests.test_a.TestX", "test_y[1]")
        );
        assert_eq!(
            address("t.py::test[a::b/c.py]"),
            pair("t", "test[a::b/c.py]")
        );
        assert_eq!(
            address("tests/test_broken.py"),
            pair("", "tests.test_broken")
        );
        assert_eq!(
            address("a.b/t.py::f[\u{1b}😀é]"),
            pair("a.b.t", "f[#x1B#x1F600é]")
        );
        assert_eq!(bin_xml_escape("a\u{7f}\u{fffe}\t"), "a#x7F#xFFFE\t");
    }

    #[test]
    fn merge_files_skips_missing_workers_and_creates_the_parent() {
        let dir = tempfile::tempdir().unwrap();
        let gw0 = dir.path().join("junit-gw0.xml");
        let gw1 = dir.path().join("junit-gw1.xml");
        std::fs::write(&gw0, fixture("pytest-9.0.2", "gw0.xml")).unwrap();
        let dest = dir.path().join("out/deeper/report.xml");
        let order = order("pytest-9.0.2");
        assert!(merge_files(&[gw0.clone(), gw1.clone()], None, &order, &dest).unwrap());
        let got = std::fs::read_to_string(&dest).unwrap();
        assert_eq!(
            got,
            merge(&[fixture("pytest-9.0.2", "gw0.xml")], &order).unwrap()
        );
        assert_eq!(summary(&got).suite["tests"], "21");

        // Both workers: the file is replaced, no temporary file is left behind.
        std::fs::write(&gw1, fixture("pytest-9.0.2", "gw1.xml")).unwrap();
        assert!(merge_files(&[gw0, gw1], None, &order, &dest).unwrap());
        assert_eq!(
            std::fs::read_to_string(&dest).unwrap(),
            merged("pytest-9.0.2")
        );
        let names: Vec<_> = std::fs::read_dir(dest.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["report.xml"]);
    }

    #[test]
    fn merge_files_without_worker_files_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("sub/report.xml");
        let missing = [dir.path().join("junit-gw0.xml")];
        assert!(!merge_files(&missing, None, &[], &dest).unwrap());
        assert!(!dest.exists());
        assert!(!dest.parent().unwrap().exists());
    }

    #[test]
    fn merge_files_names_the_bad_worker_file() {
        let dir = tempfile::tempdir().unwrap();
        let gw0 = dir.path().join("junit-gw0.xml");
        let gw1 = dir.path().join("junit-gw1.xml");
        std::fs::write(&gw0, fixture("pytest-9.0.2", "gw0.xml")).unwrap();
        std::fs::write(&gw1, "<testsuites><testsuite>").unwrap();
        let dest = dir.path().join("report.xml");
        let err = merge_files(&[gw0, gw1.clone()], None, &[], &dest).unwrap_err();
        let text = format!("{err:#}");
        assert!(text.contains(&gw1.display().to_string()), "{text}");
        assert!(text.contains("not closed"), "{text}");
        assert!(!dest.exists());
    }
}
