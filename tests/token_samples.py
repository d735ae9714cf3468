"""Texts of every tokenizer family's hard cases (numbers, whitespace, code, CJK, emoji, ...)."""

from __future__ import annotations

import json
import random

random.seed(7)


def samples() -> dict[str, str]:
    s: dict[str, str] = {}
    s["integers"] = " ".join(str(random.randint(0, 10**6)) for _ in range(300))
    s["digits_run"] = "".join(random.choice("0123456789") for _ in range(600))
    s["floats_csv"] = "\n".join(
        ",".join(f"{random.uniform(-1e3, 1e3):.4f}" for _ in range(6)) for _ in range(40)
    )
    s["prose"] = (
        "The quick brown fox jumps over the lazy dog. Meanwhile, sessionctl keeps chats "
        "as JSON-lines transcripts and assembles context within a budget. "
    ) * 10
    s["python_indented"] = "\n".join(
        "    " * (i % 4)
        + f"if value_{i} >= threshold[{i}]:  # check {i}\n"
        + "    " * (i % 4 + 1)
        + f"result.append(compute(value_{i}, {i} * 2))"
        for i in range(40)
    )
    s["json"] = json.dumps(
        [{"id": i, "name": f"item{i}", "tags": ["a", "b"], "ok": True} for i in range(40)], indent=2
    )
    s["whitespace_runs"] = "".join(
        " " * random.randint(1, 40) + random.choice("xy\n\t") for _ in range(200)
    )
    s["tabs_newlines"] = "\n\t\t\n\n \n\t " * 60
    s["cjk_zh"] = "上下文窗口必须准确计算令牌数量以避免溢出错误。本地模型服务器报告其窗口大小。" * 8
    s["cjk_ja"] = (
        "日本語のテキストはトークナイザーによって異なる方法で分割されます。漢字とひらがな。" * 8
    )
    s["cjk_rare"] = "".join(chr(random.randint(0x4E00, 0x9FFF)) for _ in range(300))
    s["korean"] = "한국어 텍스트도 토큰 수를 정확하게 세어야 합니다. " * 10
    s["emoji"] = "🎉🚀👩‍💻🇫🇷❤️🔥😀🤖🧠📦" * 20
    s["emoji_text"] = "ok 👍 done ✅ ship it 🚀 " * 30
    s["hex_hashes"] = " ".join(f"{random.getrandbits(128):032x}" for _ in range(30))
    s["base64"] = "".join(
        random.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/")
        for _ in range(800)
    )
    s["punct"] = "".join(random.choice("!@#$%^&*()[]{}<>?/\\|;:'\",.-_=+~`") for _ in range(500))
    s["accented"] = "Ça coûte très cher, garçon! Über Straße, año, naïve façade. " * 10
    s["cyrillic"] = "Контекстное окно должно быть посчитано точно. " * 10
    s["arabic"] = "يجب حساب نافذة السياق بدقة. " * 10
    s["url_paths"] = " ".join(
        f"https://example.com/api/v{i}/items/{i * 37}?q=abc&page={i}" for i in range(30)
    )
    s["random_letters"] = "".join(random.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(800))
    s["random_mixedcase"] = "".join(
        random.choice("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ") for _ in range(800)
    )
    return s
