"""The README's usage example runs and its assert holds."""

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def readme_example() -> str:
    text = README.read_text()
    marker = text.index("<!-- readme-example")
    match = re.compile(r"```python\n(.*?)```", re.S).search(text, marker)
    assert match, "no python block after the readme-example marker"
    return match.group(1)


def test_readme_example_runs(capsys):
    code = readme_example()
    assert len(code.strip().splitlines()) <= 14
    exec(compile(code, str(README), "exec"), {})
    assert "equals its dense relation form" in capsys.readouterr().out


def test_readme_has_exactly_two_setup_commands():
    text = README.read_text()
    section = text[text.index("## Set up"): text.index("## Use the library")]
    commands = re.findall(r"```bash\n(.*?)```", section, re.S)
    assert [c.strip() for c in commands] == ["make book", "make test"]
    assert "make test" in (README.parent / ".ci" / "run").read_text()


def test_readme_links_are_made_from_the_repository_url_in_config_yml():
    import yaml

    url = yaml.safe_load((README.parent / "_config.yml").read_text())["repository"]["url"]
    org, repo = url.removeprefix("https://github.com/").split("/")
    text = README.read_text()
    assert f"https://{org}.github.io/{repo}/" in text
    assert f'"ocnet_edu[book] @ git+{url}"' in text
    other = {m for m in re.findall(r"https://github\.com/[\w.-]+/[\w.-]+", text)
             if not m.startswith(("https://github.com/openseg-group", "https://github.com/open-mmlab"))}
    assert other <= {url}, other
