'use strict';
const test = require('node:test');
const assert = require('node:assert/strict');
const { contractPdf, pdfString } = require('../src/pdf');

const contract = {
  reference: 'AKIG-2024-000042',
  tenant_name: 'Léa (Dupont)',
  property_address: '12 rue Victor Hugo, 69003 Lyon',
  rent_cents: 95000,
  start_date: '2024-01-01',
  end_date: '2027-05-01',
  status: 'active',
};

test('pdfString escapes delimiters', () => {
  assert.equal(pdfString('a(b)c\\d'), '(a\\(b\\)c\\\\d)');
  assert.equal(pdfString('€'), '(?)');
});

test('contract PDF is well formed with exact xref offsets', () => {
  const buf = contractPdf(contract);
  const text = buf.toString('latin1');
  assert.ok(text.startsWith('%PDF-1.4\n'));
  assert.ok(text.trimEnd().endsWith('%%EOF'));
  assert.ok(text.includes('AKIG-2024-000042'));
  assert.ok(text.includes('L\xe9a \\(Dupont\\)'));
  const startxref = Number(/startxref\n(\d+)\n/.exec(text)[1]);
  assert.equal(text.slice(startxref, startxref + 4), 'xref');
  const entries = text.slice(startxref).split('\n').slice(3).filter((l) => / 00000 n $/.test(l));
  assert.equal(entries.length, 7);
  entries.forEach((e, i) => {
    const off = Number(e.slice(0, 10));
    assert.equal(text.slice(off, off + `${i + 1} 0 obj`.length), `${i + 1} 0 obj`);
  });
  const len = Number(/\/Length (\d+)/.exec(text)[1]);
  const s = text.indexOf('stream\n') + 'stream\n'.length;
  assert.equal(text.slice(s + len, s + len + 'endstream'.length), 'endstream');
});
