// Prints, as JSON, each test of the suite in CACHE_TESTS_DIR: its kind (required, optimal,
// check), name, and the tests it depends on, for compare.py.
const dir = process.env.CACHE_TESTS_DIR
const suites = (await import(`${dir}/tests/index.mjs`)).default
suites.push((await import(`${dir}/tests/surrogate-control.mjs`)).default)
const tests = {}
for (const suite of suites) {
  for (const test of suite.tests) {
    if (test.browser_only) continue
    tests[test.id] = { kind: test.kind || 'required', name: test.name, depends_on: test.depends_on || [] }
  }
}
console.log(JSON.stringify(tests))
