"""Invoices with the fields a Chinese fully digital e-invoice (数电发票) needs.

Prices are tax-inclusive; each line carries its amount without tax (金额), tax rate (税率)
and tax (税额); the total is given in figures and in capital Chinese numerals
(价税合计大写). The platform is the seller (销售方), the tenant the buyer (购买方).
Every line names the usage record it bills, so a figure can be traced from usage event to
ledger transfer to invoice line.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any

from yungu.engines.ledger.rating import from_minor

ITEM_NAME = "*信息技术服务*算力服务"


@dataclass(frozen=True)
class Party:
    name: str
    credit_code: str  # 统一社会信用代码 / 纳税人识别号


@dataclass(frozen=True)
class InvoiceLine:
    usage_id: str
    transfer_id: str
    item: str  # 项目名称
    spec: str  # 规格型号: pool / accelerator
    unit: str  # 单位
    quantity: Decimal  # 数量 (device-hours)
    gross: int  # 价税合计, fen
    net: int  # 金额 (without tax), fen
    tax: int  # 税额, fen
    tax_rate: Decimal
    booked_period: str
    late_from: str = ""  # usage from a closed period, booked here (备注 shows it)


@dataclass(frozen=True)
class Invoice:
    number: str  # 发票号码 (20 digits)
    period: str
    issued_at: datetime
    buyer: Party
    seller: Party
    lines: tuple[InvoiceLine, ...]
    currency: str = "CNY"

    @property
    def gross(self) -> int:
        return sum(line.gross for line in self.lines)

    @property
    def net(self) -> int:
        return sum(line.net for line in self.lines)

    @property
    def tax(self) -> int:
        return sum(line.tax for line in self.lines)

    def to_json(self) -> dict[str, Any]:
        return {
            "invoice_type": "电子发票（普通发票）",
            "number": self.number,
            "period": self.period,
            "issued_at": self.issued_at.isoformat(),
            "currency": self.currency,
            "buyer": asdict(self.buyer),
            "seller": asdict(self.seller),
            "lines": [
                {**asdict(line), "quantity": str(line.quantity), "tax_rate": str(line.tax_rate),
                 "gross": str(from_minor(line.gross)), "net": str(from_minor(line.net)),
                 "tax": str(from_minor(line.tax))}
                for line in self.lines
            ],
            "total_net": str(from_minor(self.net)),
            "total_tax": str(from_minor(self.tax)),
            "total_gross": str(from_minor(self.gross)),
            "total_gross_capital": capital_amount(self.gross),
        }


def line_for(usage_id: str, transfer_id: str, spec: str, device_seconds: int, gross: int,
             tax_rate: Decimal, booked_period: str, late_from: str = "") -> InvoiceLine:
    tax = int((Decimal(gross) * tax_rate / (1 + tax_rate)).quantize(Decimal(1), ROUND_HALF_EVEN))
    qty = (Decimal(device_seconds) / 3600).quantize(Decimal("0.0001"), ROUND_HALF_EVEN)
    return InvoiceLine(usage_id, transfer_id, ITEM_NAME, spec, "卡时", qty, gross, gross - tax, tax,
                       tax_rate, booked_period, late_from)


def invoice_number(seq: int, year: int) -> str:
    """20 digits: 2-digit year, 2-digit region code (11 = Beijing), 16-digit sequence."""
    return f"{year % 100:02d}11{seq:016d}"


_DIGITS = "零壹贰叁肆伍陆柒捌玖"
_SMALL = ["", "拾", "佰", "仟"]
_BIG = ["", "万", "亿", "万亿"]


def capital_amount(fen: int) -> str:
    """Fen -> 价税合计 in capital numerals, e.g. 123456 -> 壹仟贰佰叁拾肆元伍角陆分."""
    if fen < 0:
        return "负" + capital_amount(-fen)
    yuan, rest = divmod(fen, 100)
    jiao, fen_ = divmod(rest, 10)
    out = ""
    if yuan:
        groups: list[int] = []
        while yuan:
            yuan, g = divmod(yuan, 10000)
            groups.append(g)
        parts: list[str] = []
        zero_pending = False
        for gi in range(len(groups) - 1, -1, -1):
            g = groups[gi]
            if g == 0:
                zero_pending = True
                continue
            s = ""
            digits = f"{g:04d}"
            started = bool(parts)
            for di, ch in enumerate(digits):
                d = int(ch)
                if d == 0:
                    if started:
                        zero_pending = True
                    continue
                if zero_pending:
                    s += "零"
                    zero_pending = False
                s += _DIGITS[d] + _SMALL[3 - di]
                started = True
            parts.append(s + _BIG[gi])
        out = "".join(parts) + "元"
    if not jiao and not fen_:
        return (out or "零元") + "整"
    if jiao:
        out += _DIGITS[jiao] + "角"
    elif out:
        out += "零"
    if fen_:
        out += _DIGITS[fen_] + "分"
    return out


def render_html(inv: Invoice) -> str:
    """A printable HTML invoice (print to PDF from any browser)."""
    e = html.escape
    rows = "\n".join(
        f"<tr><td>{e(x.item)}</td><td>{e(x.spec)}</td><td>{e(x.unit)}</td><td>{x.quantity}</td>"
        f"<td>{from_minor(x.net)}</td><td>{(x.tax_rate * 100).normalize()}%</td><td>{from_minor(x.tax)}</td>"
        f"<td class=ref>{e(x.usage_id)}{' (' + e(x.late_from) + ' 补记 late)' if x.late_from else ''}</td></tr>"
        for x in inv.lines
    )
    return f"""<!doctype html><html lang="zh-CN"><head><meta charset="utf-8">
<title>电子发票 {e(inv.number)}</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse;width:100%}}
td,th{{border:1px solid #a33;padding:4px;font-size:13px}}h1{{color:#a33;text-align:center}}
.ref{{font-size:11px;color:#555}}@media print{{body{{margin:0}}}}</style></head><body>
<h1>电子发票（普通发票）</h1>
<p>发票号码 Invoice No.: {e(inv.number)} &nbsp; 开票日期 Date: {inv.issued_at.date().isoformat()}
 &nbsp; 账期 Period: {e(inv.period)}</p>
<table><tr><th colspan=4>购买方信息 Buyer</th><th colspan=4>销售方信息 Seller</th></tr>
<tr><td colspan=4>名称: {e(inv.buyer.name)}<br>统一社会信用代码/纳税人识别号: {e(inv.buyer.credit_code)}</td>
<td colspan=4>名称: {e(inv.seller.name)}<br>统一社会信用代码/纳税人识别号: {e(inv.seller.credit_code)}</td></tr>
<tr><th>项目名称</th><th>规格型号</th><th>单位</th><th>数量</th><th>金额</th><th>税率</th><th>税额</th><th>用量记录 Usage</th></tr>
{rows}
<tr><th colspan=4>合计 Total</th><td>¥{from_minor(inv.net)}</td><td></td><td>¥{from_minor(inv.tax)}</td><td></td></tr>
<tr><th colspan=2>价税合计（大写）</th><td colspan=3>{capital_amount(inv.gross)}</td>
<th>（小写）</th><td colspan=2>¥{from_minor(inv.gross)}</td></tr></table></body></html>"""


def build_invoice(number: str, period: str, issued_at: datetime, buyer: Party, seller: Party,
                  lines: Sequence[InvoiceLine]) -> Invoice:
    return Invoice(number, period, issued_at, buyer, seller, tuple(sorted(lines, key=lambda x: x.usage_id)))
