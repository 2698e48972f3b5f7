"""Render one layer's attention (all heads) as a grid of heatmaps labelled with the tokens."""
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def render_attention(maps: dict, query_tokens: dict, key_tokens: dict, title: str, path: str) -> str:
    """maps: {"encoder self": [H, Tq, Tk], ...}; query_tokens / key_tokens: the token strings per map name.
    One row of heads per map, so an encoder-decoder shows encoder self, decoder self and cross side by side."""
    names = list(maps)
    heads = max(m.shape[0] for m in maps.values())
    longest = max(max(m.shape[1], m.shape[2]) for m in maps.values())
    cell = max(2.2, 0.22 * longest)
    fig, axes = plt.subplots(len(names), heads, figsize=(cell * heads, cell * len(names) + 0.8), squeeze=False)
    for row, name in enumerate(names):
        weights = maps[name]
        for head in range(heads):
            ax = axes[row][head]
            if head >= weights.shape[0]:
                ax.axis("off")
                continue
            ax.imshow(weights[head].numpy(), cmap="viridis", vmin=0.0, vmax=1.0, aspect="auto")
            ax.set_xticks(range(len(key_tokens[name])))
            ax.set_xticklabels(key_tokens[name], rotation=90, fontsize=6)
            ax.set_yticks(range(len(query_tokens[name])))
            ax.set_yticklabels(query_tokens[name] if head == 0 else [], fontsize=6)
            ax.set_title(f"{name} - head {head}", fontsize=8)
            if head == 0:
                ax.set_ylabel("query token", fontsize=7)
            ax.set_xlabel("key token", fontsize=7)
    fig.suptitle(title + " (colour: attention weight 0-1)", fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 0.96))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
