"""Writes the PDF fixtures of the RAG parser tests with reportlab (a real PDF producer):

- handbook.pdf: three pages with a title in the metadata, headings at three sizes, wrapped
  paragraphs, bullet items, a table and page-number footers;
- handbook-encrypted.pdf: the same document, encrypted with the user password "forja";
- scanned.pdf: one page holding only an image, as a scanner makes (no text layer).

The output is byte-for-byte reproducible (reportlab's invariant mode).
Usage: pdf_fixtures.py OUT_DIR
"""

import sys
from pathlib import Path

from PIL import Image, ImageDraw
from reportlab import rl_config
from reportlab.lib import colors
from reportlab.lib.pagesizes import A4
from reportlab.lib.styles import ParagraphStyle
from reportlab.lib.units import cm
from reportlab.lib.utils import ImageReader
from reportlab.pdfgen import canvas
from reportlab.platypus import PageBreak, Paragraph, SimpleDocTemplate, Table, TableStyle

rl_config.invariant = 1

BODY = ParagraphStyle("body", fontName="Helvetica", fontSize=10, leading=13, spaceAfter=8)
H1 = ParagraphStyle("h1", fontName="Helvetica-Bold", fontSize=20, leading=24, spaceAfter=10)
H2 = ParagraphStyle("h2", fontName="Helvetica-Bold", fontSize=15, leading=19, spaceBefore=6, spaceAfter=6)
H3 = ParagraphStyle("h3", fontName="Helvetica-Bold", fontSize=12, leading=15, spaceBefore=4, spaceAfter=4)
BULLET = ParagraphStyle("bullet", parent=BODY, leftIndent=14, bulletIndent=4, spaceAfter=3)

FILLER = (
    "Every visitor reads this section before the first day in the field, because the station "
    "is remote and help can be hours away. The rules below were written after real incidents "
    "and are reviewed by the station manager at the start of each season."
)


def story():
    s = [
        Paragraph("Field Station Handbook", H1),
        Paragraph(
            "This handbook describes how the Lakeside field station works: arriving, staying "
            "safe, and leaving the site as you found it.",
            BODY,
        ),
        Paragraph("Arrival", H2),
        Paragraph(
            "The station gate opens at seven in the morning. Sign the visitor log in the main "
            "hall and collect a radio from the front desk. " + FILLER,
            BODY,
        ),
        Paragraph("Bring waterproof boots and a head torch.", BULLET, bulletText="\u2022"),
        Paragraph("Keys are returned to the front desk every evening.", BULLET, bulletText="\u2022"),
        PageBreak(),
        Paragraph("Safety", H2),
        Paragraph("Weather", H3),
        Paragraph(
            "Storms arrive quickly over the western ridge. When the siren sounds twice, every "
            "team returns to the main hall within thirty minutes. " + FILLER,
            BODY,
        ),
        Paragraph("Wildlife", H3),
        Paragraph(
            "Moose cross the northern trail at dusk. Keep a distance of at least fifty metres "
            "and never walk between a cow and her calf.",
            BODY,
        ),
        PageBreak(),
        Paragraph("Departure", H1),
        Paragraph(
            "Before leaving, clean the laboratory benches, return the radio, and record the "
            "samples you collected in the station inventory.",
            BODY,
        ),
        checkout_table(),
        Paragraph("Late departures are charged one extra night.", BODY),
    ]
    return s


def checkout_table():
    t = Table(
        [
            ["Room", "Checkout", "Deposit"],
            ["Cabin A", "10:00", "120 EUR"],
            ["Cabin B", "11:30", "95 EUR"],
            ["Dormitory", "09:00", "40 EUR"],
        ],
        hAlign="LEFT",
        spaceAfter=8,
    )
    t.setStyle(
        TableStyle(
            [
                ("FONT", (0, 0), (-1, 0), "Helvetica-Bold", 10),
                ("FONT", (0, 1), (-1, -1), "Helvetica", 10),
                ("GRID", (0, 0), (-1, -1), 0.5, colors.grey),
            ]
        )
    )
    return t


def footer(c, doc):
    c.saveState()
    c.setFont("Helvetica", 9)
    c.drawCentredString(A4[0] / 2, 1.5 * cm, str(doc.page))
    c.restoreState()


def handbook(path, encrypt=None):
    doc = SimpleDocTemplate(
        str(path),
        pagesize=A4,
        title="Field Station Handbook",
        author="Lakeside Field Station",
        encrypt=encrypt,
    )
    doc.build(story(), onFirstPage=footer, onLaterPages=footer)


def scanned(path):
    img = Image.new("L", (400, 240), 255)
    draw = ImageDraw.Draw(img)
    for i in range(12):
        draw.line([(20, 20 + i * 17), (380, 20 + i * 17)], fill=40, width=3)
    c = canvas.Canvas(str(path), pagesize=A4)
    c.drawImage(ImageReader(img), 2 * cm, A4[1] - 12 * cm, width=16 * cm, height=9.6 * cm)
    c.showPage()
    c.save()


def main():
    out = Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    handbook(out / "handbook.pdf")
    handbook(out / "handbook-encrypted.pdf", encrypt="forja")
    scanned(out / "scanned.pdf")


if __name__ == "__main__":
    main()
