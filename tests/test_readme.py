import re

from conftest import REPO
from mnist_kit import config


def test_readme_config_reference_is_generated_from_the_schema():
    readme = (REPO / "README.md").read_text()
    block = re.search(r"<!-- config-reference.*?-->\n(.*?)\n<!-- /config-reference -->", readme, re.S).group(1)
    assert block == config.reference_markdown()


def test_readme_commands_exist():
    readme = (REPO / "README.md").read_text()
    for script in re.findall(r"bash (scripts/\S+\.sh)", readme):
        assert (REPO / script).is_file(), script
    ci = (REPO / ".ci" / "run").read_text()
    assert "bash scripts/test.sh" in ci and "bash scripts/test.sh" in readme
