'use strict';
// Minimal, valid single-page PDF (PDF-1.4, Helvetica, WinAnsi) written by
// hand: catalog, pages, page, font, content stream, xref with exact offsets.

function pdfString(s) {
  // Latin-1 only (WinAnsiEncoding); escape PDF string delimiters.
  const latin = Array.from(String(s))
    .map((ch) => (ch.charCodeAt(0) <= 0xff ? ch : '?'))
    .join('');
  return '(' + latin.replace(/[\\()]/g, (c) => '\\' + c).replace(/[\r\n]+/g, ' ') + ')';
}

function contractPdf(contract) {
  const lines = [
    ['F2', 18, `Contrat de location ${contract.reference}`],
    ['F1', 12, `Locataire : ${contract.tenant_name}`],
    ['F1', 12, `Adresse du bien : ${contract.property_address}`],
    ['F1', 12, `Loyer mensuel : ${(contract.rent_cents / 100).toFixed(2)} EUR`],
    ['F1', 12, `Debut : ${contract.start_date}   Fin : ${contract.end_date || '-'}`],
    ['F1', 12, `Statut : ${contract.status}`],
    ['F1', 9, `AKIG - document genere le ${new Date().toISOString()}`],
  ];
  let y = 780;
  let content = '';
  for (const [font, size, text] of lines) {
    content += `BT /${font} ${size} Tf 56 ${y} Td ${pdfString(text)} Tj ET\n`;
    y -= size + 14;
  }
  const objects = [
    '<< /Type /Catalog /Pages 2 0 R >>',
    '<< /Type /Pages /Kids [3 0 R] /Count 1 >>',
    '<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] /Resources << /Font << /F1 4 0 R /F2 5 0 R >> >> /Contents 6 0 R >>',
    '<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>',
    '<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica-Bold /Encoding /WinAnsiEncoding >>',
    `<< /Length ${Buffer.byteLength(content, 'latin1')} >>\nstream\n${content}endstream`,
    `<< /Title ${pdfString(`Contrat ${contract.reference}`)} /Producer (AKIG) >>`,
  ];
  let out = '%PDF-1.4\n%\xe2\xe3\xcf\xd3\n';
  const offsets = [];
  objects.forEach((body, i) => {
    offsets.push(Buffer.byteLength(out, 'latin1'));
    out += `${i + 1} 0 obj\n${body}\nendobj\n`;
  });
  const xref = Buffer.byteLength(out, 'latin1');
  out += `xref\n0 ${objects.length + 1}\n0000000000 65535 f \n`;
  for (const off of offsets) out += `${String(off).padStart(10, '0')} 00000 n \n`;
  out += `trailer\n<< /Size ${objects.length + 1} /Root 1 0 R /Info 7 0 R >>\nstartxref\n${xref}\n%%EOF\n`;
  return Buffer.from(out, 'latin1');
}

module.exports = { contractPdf, pdfString };
